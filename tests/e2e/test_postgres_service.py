"""``hushscribe serve`` on PostgreSQL, as a deployment runs it: ``hushscribe db upgrade`` once,
then the server (API + a worker process) with ``HUSHSCRIBE_DATABASE_URL`` pointing at a real
server (``tests/pg.py``). Real speech through the API, a job, readiness and metrics, and the rows
checked in PostgreSQL itself: nothing went to an SQLite file on the side."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, func, select

from hushscribe.jobs.registry import workers
from hushscribe.jobs.tables import jobs, results
from hushscribe.security.tables import users
from tests.service import Service, service_data_dir
from tests.speech import clip, normalise

WORDS = "ask not what your country can do for you"


@pytest.fixture(scope="module")
def pg_service(
    tmp_path_factory: pytest.TempPathFactory, data_dir: Path, pg_url: str
) -> Iterator[Service]:
    root = service_data_dir(tmp_path_factory.mktemp("pg-service"), data_dir / "models")
    env = {"HUSHSCRIBE_DATABASE_URL": pg_url}
    upgraded = subprocess.run(
        [sys.executable, "-m", "hushscribe", "--data-dir", str(root), "db", "upgrade"],
        capture_output=True, text=True, timeout=120,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("HUSHSCRIBE_")}, **env},
    )  # fmt: skip
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    svc = Service(root, env=env).start()
    yield svc
    svc.stop()


def _text(client: httpx.Client, job_id: str, timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
        time.sleep(0.1)
    assert job["status"] == "done", job
    return client.get(f"/v1/jobs/{job_id}/result", params={"format": "text"}).text


def _metrics(svc: Service) -> dict[str, Any]:
    with svc.admin() as admin:  # a browser session: a row in PostgreSQL's sessions table
        r = admin.get("/metrics")
    assert r.status_code == 200, r.text
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def test_transcription_job_readiness_and_metrics(pg_service: Service, pg_url: str) -> None:
    ready = httpx.get(pg_service.url + "/readyz", timeout=10)
    assert (ready.status_code, ready.json()) == (200, {"status": "ready", "reasons": []})

    jfk = clip("jfk.flac").path
    with pg_service.client() as c:
        with jfk.open("rb") as fh:
            r = c.post("/v1/audio/transcriptions", files={"file": (jfk.name, fh)})
        assert r.status_code == 200, r.text
        assert WORDS in normalise(r.json()["text"], "en")

        with jfk.open("rb") as fh:
            r = c.post("/v1/jobs", files={"file": (jfk.name, fh)})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        assert WORDS in normalise(_text(c, job_id), "en")
        assert job_id in {j["id"] for j in c.get("/v1/jobs").json()["data"]}

    families = _metrics(pg_service)
    by_state = {s.labels["state"]: s.value for s in families["hushscribe_jobs"].samples}
    assert by_state == {"queued": 0, "running": 0, "done": 2, "failed": 0, "cancelled": 0}
    assert families["hushscribe_queue_depth"].samples[0].value == 0
    count = [s for s in families["hushscribe_job_processing_seconds"].samples
             if s.name.endswith("_count")]  # fmt: skip
    assert [s.value for s in count] == [2.0]
    audio = families["hushscribe_audio_seconds_processed"].samples[0].value
    assert 2 * 10.5 < audio < 2 * 11.5  # the clip is 11 s long, transcribed twice

    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            statuses = conn.execute(select(jobs.c.id, jobs.c.status)).all()
            stored = conn.execute(select(func.count()).select_from(results)).scalar_one()
            names = set(conn.execute(select(users.c.username)).scalars())
            registered = conn.execute(select(func.count()).select_from(workers)).scalar_one()
    finally:
        engine.dispose()
    assert sorted(s for _, s in statuses) == ["done", "done"] and job_id in dict(statuses)
    assert stored == 2 and "admin" in names and registered >= 1
    assert not list(pg_service.data_dir.glob("*.db")), "an SQLite database appeared beside"
