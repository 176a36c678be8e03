"""Crashes, restarts, shutdown, readiness and metrics on real server processes."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_api_jobs import submit, wait
from tests.service import Service, service_data_dir
from tests.speech import clip, normalise

pytestmark = pytest.mark.slow


def results_for(data_dir: Path, job_id: str) -> int:
    with sqlite3.connect(data_dir / "hushscribe.db") as db:
        return int(
            db.execute("SELECT COUNT(*) FROM results WHERE job_id = ?", (job_id,)).fetchone()[0]
        )


def job_row(data_dir: Path, job_id: str) -> dict[str, Any]:
    with sqlite3.connect(data_dir / "hushscribe.db") as db:
        db.row_factory = sqlite3.Row
        return dict(db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())


def wait_running(c: httpx.Client, job_id: str, min_progress: float = 0.0) -> None:
    deadline = time.monotonic() + 60
    while True:
        job = c.get(f"/v1/jobs/{job_id}").json()
        if job["status"] == "running" and job["progress"] > min_progress:
            return
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


@pytest.fixture
def fresh(tmp_path: Path, data_dir: Path) -> Any:
    started: list[Service] = []

    def make(**env: str) -> Service:
        root = tmp_path / "svc" if not started else started[0].data_dir
        if not started:
            service_data_dir(root, data_dir / "models")
        svc = Service(root, env=env)
        started.append(svc)
        return svc

    yield make
    for svc in started:
        svc.stop()


def test_worker_killed_mid_job(fresh: Any) -> None:
    svc = fresh().start()
    with svc.client() as c:
        job = submit(c, "aeneas_de.mp3")
        wait_running(c, job["id"], min_progress=0.0)
        [worker] = svc.worker_pids()
        os.kill(worker, signal.SIGKILL)
        done, _ = wait(c, job["id"])
        assert done["status"] == "done", done
        assert done["attempts"] == 2
        assert "simplicissimus" in normalise(
            c.get(f"/v1/jobs/{job['id']}/result?format=text").text, "de"
        )
        assert results_for(svc.data_dir, job["id"]) == 1
        assert svc.worker_pids() and svc.worker_pids() != [worker]
        with svc.admin() as admin:
            scraped = admin.get("/metrics").text
        metrics = {m.name: m for m in text_string_to_metric_families(scraped)}
        assert metrics["hushscribe_worker_restarts"].samples[0].value == 1


def test_server_killed_after_202_then_restarted(fresh: Any) -> None:
    svc = fresh().start()
    with svc.client() as c:
        job = submit(c, "jfk.flac")
    svc.kill9()
    assert job_row(svc.data_dir, job["id"])["status"] in ("queued", "running")
    again = fresh()
    again.port = svc.port
    again.start()
    with again.client() as c:
        done, _ = wait(c, job["id"])
        assert done["status"] == "done"
        text = c.get(f"/v1/jobs/{job['id']}/result?format=text").text
        assert "ask not what your country" in normalise(text, "en")
    assert results_for(again.data_dir, job["id"]) == 1


def test_sigterm_requeues_and_exits_cleanly(fresh: Any) -> None:
    svc = fresh().start()
    with svc.client() as c:
        job = submit(c, "aeneas_de.mp3")
        wait_running(c, job["id"])
    assert svc.stop(timeout=60) == 0
    row = job_row(svc.data_dir, job["id"])
    assert row["status"] == "queued" and row["lease_owner"] is None
    assert results_for(svc.data_dir, job["id"]) == 0
    again = fresh().start()
    with again.client() as c:
        assert wait(c, job["id"])[0]["status"] == "done"


def test_readyz_follows_the_model(tmp_path: Path, data_dir: Path) -> None:
    root = service_data_dir(tmp_path / "empty", None)
    svc = Service(root).start(wait_ready=False)
    try:
        r = httpx.get(svc.url + "/readyz")
        assert r.status_code == 503
        assert r.json()["status"] == "not ready" and r.json()["reasons"]
        # Until its worker is up the server waits for one; then the worker cannot load the model.
        no_worker, no_model = ["no worker is alive"], ["default model 'base' is not loaded"]
        deadline = time.monotonic() + 60
        while (r := httpx.get(svc.url + "/readyz")).json()["reasons"] == no_worker:
            assert r.status_code == 503
            assert time.monotonic() < deadline, svc.log()
            time.sleep(0.1)
        assert r.status_code == 503 and r.json()["reasons"] == no_model, r.json()
        assert "workers" not in r.json()  # public: no host names
        with svc.admin() as admin:
            workers = admin.get("/v1/status").json()["workers"]
        assert [w["models"] for w in workers] == [[]], workers
        (root / "models").symlink_to(data_dir / "models", target_is_directory=True)
        deadline = time.monotonic() + 60
        while httpx.get(svc.url + "/readyz").status_code != 200:
            assert time.monotonic() < deadline, svc.log()
            time.sleep(0.3)
        assert httpx.get(svc.url + "/healthz").json() == {"status": "ok"}
    finally:
        svc.stop()


def test_metrics_parse_and_move(service: Service) -> None:
    def scrape() -> dict[str, dict[tuple[str, ...], float]]:
        with service.admin() as admin:
            text = admin.get("/metrics").text
        out: dict[str, dict[tuple[str, ...], float]] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
        return out

    before = scrape()
    with service.client() as c, clip("LDC93S1.wav").path.open("rb") as fh:
        r = c.post(
            "/v1/audio/transcriptions", files={"file": ("a.wav", fh)}, data={"model": "base"}
        )
    assert r.status_code == 200
    after = scrape()
    key = (("method", "POST"), ("route", "/v1/audio/transcriptions"), ("status", "200"))
    assert (
        after["hushscribe_http_requests_total"][key]
        == before.get("hushscribe_http_requests_total", {}).get(key, 0) + 1
    )
    audio_before = sum(before.get("hushscribe_audio_seconds_processed_total", {}).values())
    audio_after = sum(after["hushscribe_audio_seconds_processed_total"].values())
    assert audio_after - audio_before == pytest.approx(2.925, abs=0.05)
    assert sum(after["hushscribe_job_processing_seconds_count"].values()) >= 1
    assert after["hushscribe_model_load_seconds"][(("model", "base"),)] > 0
    # The queue depth counts jobs waiting while the one worker is busy, and falls back when done.
    with service.client() as c:
        long = submit(c, "aeneas_de.mp3")
        wait_running(c, long["id"])
        busy = scrape()
        short = [submit(c, "LDC93S1.wav")["id"] for _ in range(2)]
        waiting = scrape()
        assert c.get(f"/v1/jobs/{long['id']}").json()["status"] == "running", (
            "the worker finished the 68 s file before the scrape: the depth shows nothing"
        )
        for job_id in (long["id"], *short):
            assert wait(c, job_id)[0]["status"] == "done"
    drained = scrape()
    depth = "hushscribe_queue_depth"
    assert waiting[depth][()] - busy[depth][()] == 2, (busy[depth], waiting[depth])
    assert waiting["hushscribe_jobs"][(("state", "queued"),)] == waiting[depth][()]
    assert drained[depth][()] == 0 and drained["hushscribe_jobs"][(("state", "queued"),)] == 0
    assert set(dict(k)["state"] for k in after["hushscribe_jobs"]) >= {"queued", "done", "failed"}


def test_results_expire_and_are_purged(fresh: Any) -> None:
    svc = fresh(HUSHSCRIBE_JOBS__RESULT_TTL_S="2", HUSHSCRIBE_JOBS__PURGE_INTERVAL_S="0.5",
                HUSHSCRIBE_JOBS__KEEP_AUDIO="true")  # fmt: skip
    # What a server killed mid-upload leaves behind (two hours old), and an upload in progress.
    blobs = svc.data_dir / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    crashed, live = blobs / ".crashed.part", blobs / ".live.part"
    crashed.write_bytes(b"RIFF half an upload")
    live.write_bytes(b"RIFF arriving")
    os.utime(crashed, (time.time() - 7200, time.time() - 7200))
    svc.start()
    deadline = time.monotonic() + 20
    while crashed.exists():
        assert time.monotonic() < deadline, "the partial upload of a crash was never swept"
        time.sleep(0.2)
    assert live.exists(), "an upload in progress must be left alone"
    live.unlink()
    with svc.client() as c:
        job = submit(c, "LDC93S1.wav")
        assert wait(c, job["id"])[0]["status"] == "done"
        assert len(list((svc.data_dir / "blobs").glob("*"))) == 1, (
            "keep_audio keeps it until expiry"
        )
        assert c.get(f"/v1/jobs/{job['id']}/result?format=text").status_code == 200
        deadline = time.monotonic() + 20
        while c.get(f"/v1/jobs/{job['id']}").status_code != 404:
            assert time.monotonic() < deadline, "the purge task never ran"
            time.sleep(0.2)
    assert results_for(svc.data_dir, job["id"]) == 0
    assert not any((svc.data_dir / "blobs").glob("*"))
