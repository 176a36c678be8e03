"""A full disk makes a worker back off and retry, never crash-loop or leave a job stuck."""

from __future__ import annotations

import itertools
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from hushscribe.jobs.queue import JobQueue
from hushscribe.jobs.worker import Worker
from hushscribe.settings import Settings, load_settings
from hushscribe.transcript import Transcript
from tests.speech import clip, normalise


def _full(*_args: Any, **_kwargs: Any) -> Any:
    raise OperationalError("INSERT INTO results …", {}, Exception("database or disk is full"))


@pytest.fixture
def worker_settings(tmp_path: Path, data_dir: Path) -> Settings:
    (tmp_path / "models").symlink_to(data_dir / "models", target_is_directory=True)
    return load_settings(
        None, data_dir=tmp_path, engine={"cpu_threads": 2, "default_model": "tiny.en"}
    )


def _enqueue(queue: JobQueue, settings: Settings) -> str:
    settings.blobs_dir.mkdir(parents=True, exist_ok=True)
    blob = settings.blobs_dir / ("a" * 32)
    shutil.copyfile(clip("jfk.flac").path, blob)
    job = queue.enqueue("alice", "transcribe", "tiny.en", {}, str(blob), "0" * 64, 1, "jfk.flac")
    return job.id


def test_a_result_that_cannot_be_stored_goes_back_to_the_queue(worker_settings: Settings) -> None:
    worker = Worker(worker_settings, "w-disk")
    job_id = _enqueue(worker.queue, worker_settings)
    real_complete = worker.queue.complete
    worker.queue.complete = _full  # type: ignore[method-assign]
    with pytest.raises(OperationalError):
        worker._step()  # the loop catches this and backs off
    job = worker.queue.get(job_id, None)
    assert job is not None and job.status == "queued"  # not stuck in "running"
    assert job.error_code == "insufficient_storage" and job.attempts == 1
    assert worker.holdings.ids() == []  # no lease outlives the attempt
    worker.queue.complete = real_complete  # type: ignore[method-assign]
    assert worker._step() is True
    job = worker.queue.get(job_id, None)
    assert job is not None and job.status == "done" and job.attempts == 2
    stored = Transcript.model_validate_json(worker.queue.result(job_id, None) or "")
    text = normalise(stored.text, "en")
    assert "ask not what your country" in text


def test_the_loop_backs_off_instead_of_dying(worker_settings: Settings) -> None:
    worker = Worker(worker_settings, "w-loop")
    calls: list[float] = []

    def full_claim(*_args: Any, **_kwargs: Any) -> Any:
        calls.append(time.monotonic())
        _full()

    worker.queue.claim = full_claim  # type: ignore[method-assign]
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while len(calls) < 3:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.1)
    worker.stopping.set()
    thread.join(30)
    assert not thread.is_alive()
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert gaps[1] > gaps[0] * 1.5  # waits longer each time: 1 s, 2 s, …
