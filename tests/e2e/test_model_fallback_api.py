"""Fallback through the real server: a request for an alias whose first model is damaged is
served by the next one, and the answer, the job, the audit record and /metrics all say so."""

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.model_dirs import add_damaged, link_demo
from tests.service import Service
from tests.speech import clip

JFK = "ask not what your country can do for you"
ALIASES = {
    "accurate": {"models": ["damaged", "tiny.en"]},
    "fast": {"models": ["base", "tiny.en"], "queue_wait_s": 600},
}


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("fallback-service")
    link_demo(root / "models", data_dir / "models")
    add_damaged(root / "models", data_dir / "models" / "tiny.en")
    env = {  # the defaults a user gets: two workers, 30 s leases
        "HUSHSCRIBE_JOBS__WORKERS": "2",
        "HUSHSCRIBE_JOBS__LEASE_S": "30",
        "HUSHSCRIBE_ENGINE__DEFAULT_MODEL": "tiny.en",
        "HUSHSCRIBE_MODELS__ALIASES": json.dumps(ALIASES),
    }
    service = Service(root, env=env).start()
    yield service
    service.stop()


def _transcribe(svc: Service, model: str) -> tuple[int, dict]:
    with svc.client("alice") as c, clip("jfk.flac").path.open("rb") as fh:
        r = c.post(
            "/v1/audio/transcriptions",
            files={"file": ("jfk.flac", fh)},
            data={"model": model, "response_format": "verbose_json", "language": "en"},
        )
    return r.status_code, r.json()


def test_an_alias_falls_back_and_every_surface_says_why(svc: Service) -> None:
    status, body = _transcribe(svc, "accurate")
    assert status == 200, body
    assert JFK in body["text"].lower()
    assert body["model"]["name"] == "tiny.en"
    assert body["model"]["requested"] == "accurate"
    [step] = body["model"]["fallbacks"]
    assert (step["model"], step["reason"]) == ("damaged", "damaged")
    with svc.admin() as admin:
        metrics = admin.get("/metrics").text
    assert 'hushscribe_model_fallbacks_total{reason="damaged"} 1.0' in metrics
    assert 'hushscribe_model_load_seconds{model="tiny.en"}' in metrics
    assert 'hushscribe_model_memory_bytes{model="tiny.en"}' in metrics
    audit = [
        json.loads(line)
        for f in sorted((svc.data_dir / "audit").glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]
    done = [r for r in audit if r["type"] == "transcription_done"]
    assert done[-1]["details"]["model"] == "tiny.en"
    assert done[-1]["details"]["requested_model"] == "accurate"
    assert done[-1]["details"]["fallbacks"] == ["damaged:damaged"]


def test_a_job_shows_the_model_used(svc: Service) -> None:
    with svc.client("alice") as c, clip("jfk.flac").path.open("rb") as fh:
        r = c.post("/v1/jobs", files={"file": ("jfk.flac", fh)}, data={"model": "accurate"})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        assert r.json()["model"] == "accurate"
        deadline = time.monotonic() + 120
        view = c.get(f"/v1/jobs/{job_id}").json()
        while view["status"] not in ("done", "failed") and time.monotonic() < deadline:
            time.sleep(0.5)
            view = c.get(f"/v1/jobs/{job_id}").json()
        listed = {j["id"]: j for j in c.get("/v1/jobs").json()["data"]}
    assert view["status"] == "done", view
    assert view["model_used"] == "tiny.en"
    assert [f["reason"] for f in view["fallbacks"]] == ["damaged"]
    assert listed[job_id]["model_used"] == "tiny.en"  # lists show it too (jobs.model_used)


def test_models_list_shows_aliases_and_what_is_loaded(svc: Service) -> None:
    with svc.client("alice") as c:
        data = {m["id"]: m for m in c.get("/v1/models").json()["data"]}
    assert {"base", "tiny.en", "damaged", "accurate", "fast"} <= set(data)
    assert data["accurate"]["alias_of"] == ["damaged", "tiny.en"]
    assert data["fast"]["queue_wait_s"] == 600
    assert data["tiny.en"]["default"] is True
    assert data["tiny.en"]["loaded"] == 2  # the default, in both workers
    assert data["damaged"]["loaded"] == 0


def test_an_unknown_model_is_a_400_that_lists_the_available_ones(svc: Service) -> None:
    status, body = _transcribe(svc, "large-v9")
    assert status == 400
    message = body["error"]["message"]
    assert body["error"]["code"] == "model_not_found"
    for name in ("base", "tiny.en", "accurate", "fast"):
        assert name in message
