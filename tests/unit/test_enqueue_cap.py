"""The queue cap is checked in the same write transaction as the insert."""

from __future__ import annotations

from pathlib import Path

import pytest

from hushscribe.errors import QueueFull
from hushscribe.jobs.queue import JobQueue, make_engine


def _enqueue(queue: JobQueue, i: int, queue_max: int | None) -> str:
    job = queue.enqueue(
        "alice", "transcribe", "base", {}, f"/b/{i}", "0" * 64, 1, "a.wav", queue_max=queue_max
    )
    return job.id


def test_enqueue_refuses_past_queue_max(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    try:
        queue = JobQueue(engine)
        first = _enqueue(queue, 0, 2)
        _enqueue(queue, 1, 2)
        with pytest.raises(QueueFull) as raised:
            _enqueue(queue, 2, 2)
        assert raised.value.status == 429 and "2 jobs" in raised.value.message
        assert queue.queue_depth() == 2  # nothing was inserted
        _enqueue(queue, 3, None)  # without a cap (the worker's retries, the CLI) it goes in
        assert queue.cancel(first, "alice") is not None
        _enqueue(queue, 4, 3)  # a cancelled job frees its place
        assert queue.queue_depth() == 3
    finally:
        engine.dispose()
