"""Durable jobs over HTTP: submit, watch progress, fetch results, owners, cancel and delete."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import httpx
import pytest
import srt

from tests.service import Service
from tests.speech import clip, normalise


def submit(client: httpx.Client, name: str, **fields: str) -> dict[str, Any]:
    path = clip(name).path
    with path.open("rb") as fh:
        r = client.post("/v1/jobs", files={"file": (path.name, fh)}, data=fields)
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    body: dict[str, Any] = r.json()
    return body


def wait(
    client: httpx.Client, job_id: str, timeout: float = 180
) -> tuple[dict[str, Any], list[float]]:
    seen: list[float] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        seen.append(job["progress"])
        if job["status"] in ("done", "failed", "cancelled"):
            return job, seen
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")


def test_long_job_progress_and_srt(service: Service) -> None:
    with service.client("alice") as c:
        job = submit(c, "aeneas_de.mp3", language="de")
        assert job["status"] == "queued" and len(job["id"]) == 32
        early = c.get(f"/v1/jobs/{job['id']}/result")
        assert early.status_code == 409 and early.json()["error"]["code"] == "job_not_done"
        done, progress = wait(c, job["id"])
        assert done["status"] == "done", done
        assert any(0.0 < p < 1.0 for p in progress), progress
        assert progress == sorted(progress), "progress never goes back"
        assert done["progress"] == 1.0 and done["audio_seconds"] > 60
        assert done["timings"]["processing_seconds"] > 0
        subs = list(srt.parse(c.get(f"/v1/jobs/{job['id']}/result", params={"format": "srt"}).text))
        assert len(subs) > 3 and subs[-1].end.total_seconds() <= 68.1
        text = normalise(c.get(f"/v1/jobs/{job['id']}/result?format=text").text, "de")
        assert "simplicissimus" in text and "grimmelshausen" in text
        assert not any((service.data_dir / "blobs").glob("*")), "audio is deleted when the job ends"


def test_owners_see_only_their_jobs(service: Service) -> None:
    with service.client("alice") as alice, service.client("bob") as bob:
        job = submit(alice, "LDC93S1.wav")
        assert bob.get(f"/v1/jobs/{job['id']}").status_code == 404
        assert bob.get(f"/v1/jobs/{job['id']}/result").json()["error"]["code"] == "job_not_found"
        assert bob.delete(f"/v1/jobs/{job['id']}").status_code == 404
        assert job["id"] not in {j["id"] for j in bob.get("/v1/jobs").json()["data"]}
        done, _ = wait(alice, job["id"])
        assert done["audio_seconds"] == pytest.approx(2.925, abs=0.05)
        assert job["id"] in {j["id"] for j in alice.get("/v1/jobs").json()["data"]}


def test_pages_and_delete(service: Service) -> None:
    with service.client("bob") as c:
        ids = [submit(c, "LDC93S1.wav")["id"] for _ in range(3)]
        for i in ids:
            wait(c, i)
        first = c.get("/v1/jobs", params={"limit": 2}).json()
        assert [j["id"] for j in first["data"]] == ids[::-1][:2] and first["has_more"]
        rest = c.get("/v1/jobs", params={"limit": 2, "after": first["last_id"]}).json()
        assert rest["data"][0]["id"] == ids[0]
        gone = c.delete(f"/v1/jobs/{ids[0]}")
        assert gone.status_code == 200 and gone.json()["deleted"] is True
        assert c.get(f"/v1/jobs/{ids[0]}").status_code == 404
        assert "greasy" in c.get(f"/v1/jobs/{ids[1]}/result?format=text").text.lower()


def test_cancel_a_running_job(service: Service) -> None:
    with service.client("alice") as c:
        job = submit(c, "aeneas_de.mp3")
        deadline = time.monotonic() + 60
        while c.get(f"/v1/jobs/{job['id']}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        worker = service.worker_pids()
        cancelled = c.delete(f"/v1/jobs/{job['id']}").json()
        assert cancelled["status"] == "cancelled"
        # The worker learns at its next heartbeat and drops the work: the one worker goes on to
        # the next job, and by the time that is done the cancelled job has had every chance to
        # end otherwise.
        following = submit(c, "LDC93S1.wav")
        done, _ = wait(c, following["id"])
        assert done["status"] == "done" and done["attempts"] == 1, done
        assert "greasy" in c.get(f"/v1/jobs/{following['id']}/result?format=text").text.lower()
        assert service.worker_pids() == worker, "the worker stops the job, not itself"
        after = c.get(f"/v1/jobs/{job['id']}").json()
        assert after["status"] == "cancelled" and after["progress"] < 1.0, after
        result = c.get(f"/v1/jobs/{job['id']}/result")
        assert result.status_code == 409 and result.json()["error"]["code"] == "job_cancelled"
        with sqlite3.connect(service.data_dir / "hushscribe.db") as db:
            stored = db.execute("SELECT COUNT(*) FROM results WHERE job_id = ?", (job["id"],))
            assert stored.fetchone()[0] == 0, "a cancelled job never gets a result"
        assert not any((service.data_dir / "blobs").glob("*")), "cancelled audio is purged"


def test_queued_jobs_share_a_batch(service: Service) -> None:
    names = ["LDC93S1.wav", "jfk.flac", "61-70968-0000.flac", "LJ001-0002.flac", "LDC93S1.wav"]
    expected = [
        "greasy wash",
        "ask not what your country",
        "wizard",
        "comparatively modern",
        "greasy wash",
    ]
    with service.client("bob") as c:
        ids = [submit(c, n, language="en")["id"] for n in names]
        results = []
        for job_id in ids:
            done, _ = wait(c, job_id)
            assert done["status"] == "done", done
            results.append(c.get(f"/v1/jobs/{job_id}/result?format=verbose_json").json())
    for body, words in zip(results, expected, strict=True):
        assert words in normalise(body["text"], "en"), body["text"]
    assert max(body["options"].get("batch_jobs", 1) for body in results) >= 2


def test_a_client_that_hangs_up_cancels_its_job(service: Service) -> None:
    path = clip("aeneas_de.mp3").path
    with service.client("bob", timeout=2.0) as c, path.open("rb") as fh:
        try:
            c.post("/v1/audio/transcriptions", files={"file": (path.name, fh)})
            raise AssertionError("a 68 s file cannot be done in 2 s")
        except httpx.ReadTimeout:
            pass  # the client gives up and closes the connection
    with service.client("bob") as c:
        deadline = time.monotonic() + 15
        while True:
            newest = c.get("/v1/jobs", params={"limit": 1}).json()["data"][0]
            if newest["status"] == "cancelled" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert newest["filename"] == "aeneas_de.mp3"
    assert newest["status"] == "cancelled", newest
