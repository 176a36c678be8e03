"""The pieces that let workers die at any instant without freezing anything: lock-free pipes,
leases held for exactly as long as a job is held, and a deadline read from outside."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from hushscribe.errors import DecodeTimeout, ProcessingTimeout
from hushscribe.jobs.holding import Holdings
from hushscribe.jobs.queue import JobQueue, make_engine
from hushscribe.jobs.signals import WorkerLink, link_pair, read_ended
from hushscribe.jobs.watchdog import DECODE, PROCESS, Watchdog
from tests.unit.test_queue import add

CTX = multiprocessing.get_context("spawn")


def _idle_worker(link: WorkerLink) -> None:
    link.start()
    while True:
        link.wait_for_work(60)


def test_a_killed_idle_worker_blocks_neither_side() -> None:
    """The old wake-up was a shared Event: a worker killed inside its wait left the lock held
    and the API blocked on the next set()."""
    api, worker = link_pair(CTX)
    proc = CTX.Process(target=_idle_worker, args=(worker,), daemon=True)
    proc.start()
    worker.wake.close()
    worker.done.close()
    time.sleep(1.0)  # the child is inside its wait
    os.kill(proc.pid or 0, signal.SIGKILL)
    proc.join(10)
    started = time.monotonic()
    for _ in range(100_000):  # far more than a pipe holds: never blocks, drops instead
        api.notify_work()
    ids, closed = read_ended([api.done], 0.5)
    assert ids == [] and closed == [api.done]  # the dead worker's pipe reads as closed
    assert time.monotonic() - started < 5


def test_job_ids_cross_whole_and_a_full_pipe_never_blocks_the_worker() -> None:
    api, worker = link_pair(CTX)
    worker.start()
    sent = [f"{i:032x}" for i in range(20_000)]  # more than the pipe buffers
    started = time.monotonic()
    for job_id in sent:
        worker.job_ended(job_id)
    assert time.monotonic() - started < 5
    received: list[str] = []
    while True:
        ids, _ = read_ended([api.done], 0.1)
        if not ids:
            break
        received += ids
    assert received and received == sent[: len(received)]  # whole ids, in order, none torn


def test_watchdog_names_the_stage_and_the_jobs() -> None:
    dog = Watchdog(CTX)
    assert dog.overdue() is None
    dog.arm(DECODE, 5.0, ["a" * 32, "b" * 32])
    assert dog.overdue() is None
    late = dog.overdue(now=time.time() + 6)
    assert late is not None and late.error is DecodeTimeout
    assert late.job_ids == ["a" * 32, "b" * 32] and late.limit_s == 5.0
    dog.arm(PROCESS, 2.0, ["c" * 32])
    late = dog.overdue(now=time.time() + 3)
    assert late is not None and late.error is ProcessingTimeout and late.job_ids == ["c" * 32]
    dog.disarm()
    assert dog.overdue(now=time.time() + 100) is None


def test_every_held_job_keeps_its_lease_and_learns_of_its_cancellation(tmp_path: Path) -> None:
    """A batch's waiting jobs keep live leases (they used to lapse while others ran); a job
    cancelled while held is flagged within about a second."""
    engine = make_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    queue = JobQueue(engine)
    for _ in range(3):
        add(queue)
    claimed = queue.claim("w1", lease_seconds=1.5, limit=3)
    assert len(claimed) == 3
    holdings = Holdings(queue, "w1", lease_s=1.5)
    held = [holdings.hold(j.id) for j in claimed]
    holdings.start()
    try:
        time.sleep(4.0)  # well past the claim's lease
        assert queue.claim("w2", lease_seconds=30, limit=3) == []  # nothing expired
        queue.cancel(claimed[0].id, None)
        deadline = time.monotonic() + 3
        while not held[0].lost.is_set():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert not held[1].lost.is_set()
        holdings.release(claimed[1].id)
        time.sleep(3.0)  # released: no longer renewed, so another worker may take it
        assert [j.id for j in queue.claim("w2", lease_seconds=30, limit=3)] == [claimed[1].id]
    finally:
        holdings.stop()
        engine.dispose()


@pytest.mark.parametrize("stage", [DECODE, PROCESS])
def test_arm_replaces_the_previous_deadline(stage: int) -> None:
    dog = Watchdog(CTX)
    dog.arm(stage, 1.0, ["x" * 32])
    dog.arm(stage, 100.0, ["x" * 32])  # progress: the clock starts again
    assert dog.overdue(now=time.time() + 2) is None
