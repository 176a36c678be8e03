"""The job queue on a real SQLite file and a real PostgreSQL server (``tests/pg.py``), every test
on both: leases, attempts, ownership, retention, two processes claiming at once."""

from __future__ import annotations

import json
import multiprocessing
import time
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, insert, select
from sqlalchemy.exc import IntegrityError

from hushscribe.errors import InvalidRequest
from hushscribe.jobs.queue import WORKER_LOST, JobQueue, JobRecord, make_engine
from hushscribe.jobs.tables import jobs, results
from tests.pg import PgServer

TRANSCRIPT = json.dumps({"text": "ask not what your country can do for you", "segments": []})


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A new empty database for each test: an SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
        return
    server: PgServer = request.getfixturevalue("pg_server")
    url = server.create_database("test_queue")
    yield url
    server.drop_database(url)


only_sqlite = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url, upgrade=True)  # PostgreSQL's default only checks the schema
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queue(engine: Engine, clock: Clock) -> JobQueue:
    return JobQueue(engine, clock=clock)


def add(queue: JobQueue, owner: str = "alice", **kwargs: Any) -> JobRecord:
    args: dict[str, Any] = {
        "task": "transcribe",
        "model": "base",
        "options": {"language": "en", "beam_size": 5},
        "blob_path": "/blobs/" + "ab" * 16,
        "blob_sha256": "0" * 64,
        "blob_bytes": 3 * 1024**3,  # past 32 bits: the column must hold it
        "filename": "meeting.wav",
    }
    return queue.enqueue(owner, **(args | kwargs))


def count_results(engine: Engine, job_id: str | None = None) -> int:
    query = select(func.count()).select_from(results)
    if job_id is not None:
        query = query.where(results.c.job_id == job_id)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def test_record_mirrors_the_table() -> None:
    assert [f.name for f in fields(JobRecord)] == list(jobs.c.keys())


@only_sqlite
def test_sqlite_is_durable_and_concurrent(engine: Engine) -> None:
    with engine.connect() as conn:
        pragmas = {
            name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
        }
    assert pragmas == {
        "journal_mode": "wal",
        "synchronous": 2,
        "busy_timeout": 30000,
        "foreign_keys": 1,
    }


# Every JSON type, and text beyond ASCII: the options column gives back what it was given.
OPTIONS = {"language": "zh", "beam_size": 5, "temperature": 0.2, "vad": True, "prompt": None,
           "hotwords": ["naïve café", "你好"], "window": {"s": 600.5}}  # fmt: skip


def test_round_trip(queue: JobQueue, clock: Clock) -> None:
    clock.advance(0.123456789)  # epoch seconds with a fraction: every digit must come back
    job = add(queue, filename="x" * 300 + ".wav", options=OPTIONS)
    assert len(job.id) == 32 and int(job.id, 16) >= 0
    assert (job.status, job.attempts, job.max_attempts, job.progress) == ("queued", 0, 3, 0.0)
    assert job.filename == "x" * 255
    assert queue.get(job.id, "alice") == job
    assert queue.queue_depth() == 1

    clock.advance(1)
    [claimed] = queue.claim("w1", lease_seconds=30)
    assert claimed.id == job.id
    assert (claimed.status, claimed.lease_owner, claimed.attempts) == ("running", "w1", 1)
    assert claimed.lease_expires_at == clock.now + 30
    assert claimed.started_at == clock.now
    assert claimed.options == OPTIONS
    assert claimed.created_at == job.created_at == clock.now - 1
    assert claimed.blob_bytes == 3 * 1024**3
    assert queue.queue_depth() == 0
    assert queue.claim("w2", lease_seconds=30) == []

    clock.advance(10)
    assert queue.heartbeat(job.id, "w1", 30, progress=0.5, audio_seconds=11.0)
    beat = queue.get(job.id, None)
    assert beat is not None
    assert (beat.progress, beat.audio_seconds, beat.lease_expires_at) == (0.5, 11.0, clock.now + 30)
    assert not queue.heartbeat(job.id, "w2", 30)  # not w2's job

    assert queue.result(job.id, "alice") is None
    assert queue.complete(job.id, "w1", TRANSCRIPT, result_ttl_s=3600)
    done = queue.wait_for(job.id, timeout_s=1)
    assert (done.status, done.progress, done.lease_owner) == ("done", 1.0, None)
    assert done.finished_at == clock.now
    assert done.result_expires_at == clock.now + 3600
    assert queue.result(job.id, "alice") == TRANSCRIPT
    assert queue.counts_by_status() == {
        "queued": 0,
        "running": 0,
        "done": 1,
        "failed": 0,
        "cancelled": 0,
    }


def test_enqueue_refuses_unknown_task(queue: JobQueue) -> None:
    with pytest.raises(InvalidRequest, match="unknown task 'summarise'"):
        add(queue, task="summarise")
    assert queue.queue_depth() == 0


def test_claim_order_models_and_limit(queue: JobQueue, clock: Clock) -> None:
    old = add(queue)
    clock.advance(1)
    urgent = add(queue, priority=5)
    clock.advance(1)
    other_model = add(queue, model="tiny.en")
    clock.advance(1)
    new = add(queue)
    assert queue.claim("w", 30, models=[]) == []
    assert [j.id for j in queue.claim("w", 30, models={"base"}, limit=2)] == [urgent.id, old.id]
    assert [j.id for j in queue.claim("w", 30, limit=5)] == [other_model.id, new.id]


@only_sqlite
def test_claim_uses_begin_immediate_on_sqlite(queue: JobQueue, engine: Engine) -> None:
    add(queue)
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        queue.claim("w", 30)
        queue.get("nothing", None)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    begins = [s for s in statements if s.startswith("BEGIN")]
    assert begins == ["BEGIN IMMEDIATE", "BEGIN"]  # the read does not take the write lock


def test_lease_expiry_counts_attempts_then_worker_lost(queue: JobQueue, clock: Clock) -> None:
    job = add(queue, max_attempts=2)
    assert queue.claim("w1", 10)[0].attempts == 1
    clock.advance(9)
    assert queue.claim("w2", 10) == []  # the lease still holds

    clock.advance(2)  # w1 died: its lease ran out
    [again] = queue.claim("w2", 10)
    assert (again.id, again.attempts, again.lease_owner) == (job.id, 2, "w2")
    assert not queue.heartbeat(job.id, "w1", 10)  # w1 woke up, but the job is w2's now
    assert not queue.complete(job.id, "w1", TRANSCRIPT, None)

    clock.advance(11)  # w2 died too, and no attempt is left
    assert queue.claim("w3", 10) == []
    lost = queue.get(job.id, "alice")
    assert lost is not None
    assert (lost.status, lost.error_code, lost.attempts) == ("failed", WORKER_LOST, 2)
    assert lost.error_message is not None and "used all its attempts" in lost.error_message
    assert (lost.lease_owner, lost.finished_at) == (None, clock.now)


def test_complete_twice_keeps_one_result(queue: JobQueue, engine: Engine) -> None:
    job = add(queue)
    queue.claim("w1", 30)
    assert queue.complete(job.id, "w1", TRANSCRIPT, None)
    assert not queue.complete(job.id, "w1", '{"text": "second"}', None)
    assert count_results(engine, job.id) == 1
    assert queue.result(job.id, "alice") == TRANSCRIPT
    with pytest.raises(IntegrityError), engine.begin() as conn:  # the database enforces it
        conn.execute(insert(results).values(job_id=job.id, transcript="{}", created_at=0.0))
    assert count_results(engine) == 1


def test_fail_retries_until_attempts_run_out(queue: JobQueue) -> None:
    job = add(queue, max_attempts=2)
    queue.claim("w1", 30)
    assert not queue.fail(job.id, "w1", "internal_error", "out of memory", retry=True)
    retried = queue.get(job.id, None)
    assert retried is not None
    assert (retried.status, retried.attempts, retried.error_code) == ("queued", 1, "internal_error")
    assert not queue.fail(job.id, "w1", "x", "not held any more", retry=True)

    queue.claim("w2", 30)
    assert queue.fail(job.id, "w2", "internal_error", "out of memory again", retry=True)
    final = queue.get(job.id, None)
    assert final is not None
    assert (final.status, final.attempts, final.error_message) == (
        "failed",
        2,
        "out of memory again",
    )


def test_fail_without_retry_is_final(queue: JobQueue, clock: Clock) -> None:
    job = add(queue)
    queue.claim("w1", 30)
    assert queue.fail(job.id, "w1", "decode_failed", "not audio", retry=False, ttl_s=60)
    final = queue.get(job.id, None)
    assert final is not None
    assert (final.status, final.attempts, final.result_expires_at) == ("failed", 1, clock.now + 60)


def test_cancel_only_by_owner(queue: JobQueue, clock: Clock) -> None:
    job = add(queue, owner="alice")
    assert queue.cancel(job.id, "mallory") is None
    assert queue.cancel("0" * 32, "mallory") is None  # unknown: the same answer
    assert queue.get(job.id, None) == job  # untouched

    queue.claim("w1", 30)
    clock.advance(5)
    cancelled = queue.cancel(job.id, "alice")
    assert cancelled is not None
    assert (cancelled.status, cancelled.lease_owner, cancelled.finished_at) == (
        "cancelled",
        None,
        clock.now,
    )
    assert not queue.heartbeat(job.id, "w1", 30)  # the worker learns and stops
    assert not queue.complete(job.id, "w1", TRANSCRIPT, None)
    assert queue.result(job.id, "alice") is None
    again = queue.cancel(job.id, "alice")  # already finished: unchanged
    assert again == cancelled


def test_owner_isolation(queue: JobQueue, engine: Engine, clock: Clock) -> None:
    mine = []
    for _ in range(3):
        mine.append(add(queue, owner="alice"))
        clock.advance(1)
    theirs = add(queue, owner="bob")
    [claimed] = queue.claim("w", 30, limit=1)
    assert claimed.id == mine[0].id
    queue.complete(claimed.id, "w", TRANSCRIPT, None)

    assert queue.get(theirs.id, "alice") is None
    assert queue.get(theirs.id, None) == theirs  # admin
    assert queue.result(mine[0].id, "bob") is None
    assert queue.result(mine[0].id, "alice") == TRANSCRIPT
    assert [j.id for j in queue.list("alice")] == [j.id for j in reversed(mine)]
    assert [j.id for j in queue.list("bob")] == [theirs.id]
    assert len(queue.list(None)) == 4

    page1 = queue.list("alice", limit=2)
    page2 = queue.list("alice", limit=2, after=page1[-1].id)
    assert [j.id for j in page1 + page2] == [mine[2].id, mine[1].id, mine[0].id]
    assert queue.list("alice", after=theirs.id) == []  # bob's cursor is not alice's

    assert queue.delete(mine[0].id, "bob") is None
    assert queue.get(mine[0].id, "alice") is not None
    assert queue.delete(mine[0].id, "alice") == mine[0].blob_path
    assert queue.get(mine[0].id, None) is None
    assert count_results(engine) == 0
    assert queue.delete(mine[0].id, "alice") is None


def test_heartbeat_false_after_cancel_and_delete(queue: JobQueue) -> None:
    first, second = add(queue), add(queue)
    queue.claim("w", 30, limit=2)
    queue.cancel(first.id, "alice")
    queue.delete(second.id, "alice")
    assert not queue.heartbeat(first.id, "w", 30)
    assert not queue.heartbeat(second.id, "w", 30)


def test_purge_expired(queue: JobQueue, engine: Engine, clock: Clock) -> None:
    short = add(queue, blob_path="/blobs/short")
    clock.advance(1)
    kept = add(queue, blob_path="/blobs/kept")
    clock.advance(1)
    waiting = add(queue, blob_path="/blobs/waiting")
    queue.claim("w", 30, limit=2)
    queue.complete(short.id, "w", TRANSCRIPT, result_ttl_s=100)
    queue.complete(kept.id, "w", TRANSCRIPT, result_ttl_s=None)

    clock.advance(50)
    assert queue.purge_expired() == []
    clock.advance(60)
    assert queue.purge_expired() == ["/blobs/short"]
    assert queue.get(short.id, None) is None
    assert count_results(engine, short.id) == 0
    assert queue.result(kept.id, "alice") == TRANSCRIPT
    assert queue.get(waiting.id, None) is not None
    assert queue.purge_expired(now=clock.now + 10**9) == []


def test_ended_jobs_expire_by_default(engine: Engine, clock: Clock) -> None:
    queue = JobQueue(engine, clock=clock, ended_ttl_s=60)
    failed = add(queue, blob_path="/blobs/failed")
    clock.advance(1)
    lost = add(queue, blob_path="/blobs/lost", max_attempts=1)
    clock.advance(1)
    cancelled = add(queue, blob_path="/blobs/cancelled")
    queue.claim("w", 10, limit=2)
    queue.fail(failed.id, "w", "decode_failed", "not audio", retry=False)
    queue.cancel(cancelled.id, "alice")
    clock.advance(11)
    assert queue.claim("w", 10) == []
    gone = queue.get(lost.id, None)
    assert gone is not None and gone.error_code == WORKER_LOST
    expiries = {j.blob_path: j.result_expires_at for j in queue.list(None)}
    assert expiries == {
        "/blobs/failed": clock.now - 11 + 60,
        "/blobs/cancelled": clock.now - 11 + 60,
        "/blobs/lost": clock.now + 60,
    }
    clock.advance(50)
    assert sorted(queue.purge_expired()) == ["/blobs/cancelled", "/blobs/failed"]
    clock.advance(11)
    assert queue.purge_expired() == ["/blobs/lost"]
    assert queue.counts_by_status() == dict.fromkeys(
        ("queued", "running", "done", "failed", "cancelled"), 0
    )


def test_requeue_worker(queue: JobQueue) -> None:
    a, b, c = add(queue, priority=2), add(queue, priority=1), add(queue)
    queue.claim("w1", 30, limit=2)
    queue.claim("w2", 30)
    assert queue.requeue_worker("w1") == 2
    for job_id in (a.id, b.id):
        back = queue.get(job_id, None)
        assert back is not None
        assert (back.status, back.attempts, back.lease_owner) == ("queued", 0, None)
    still = queue.get(c.id, None)
    assert still is not None and (still.status, still.lease_owner) == ("running", "w2")
    assert {j.attempts for j in queue.claim("w3", 30, limit=5)} == {1}


def test_wait_for(queue: JobQueue) -> None:
    job = add(queue)
    waited = queue.wait_for(job.id, timeout_s=0.1, poll_s=0.02)
    assert waited.status == "queued"  # timed out: the record as last seen
    with pytest.raises(LookupError):
        queue.wait_for("0" * 32, timeout_s=0.1)


def _claim_and_complete(url: str, worker_id: str, start: Any, out: Any) -> None:
    engine = make_engine(url)
    queue = JobQueue(engine)
    taken: list[str] = []
    refused = 0
    try:
        start.wait()
        while claimed := queue.claim(worker_id, 60, limit=1 + len(taken) % 3):
            for job in claimed:
                taken.append(job.id)
                time.sleep(0.002)  # the work, done outside any transaction
                refused += not queue.complete(job.id, worker_id, TRANSCRIPT, None)
    finally:
        engine.dispose()
        out.put((worker_id, taken, refused))


def test_two_processes_never_claim_the_same_job(
    queue: JobQueue, engine: Engine, db_url: str
) -> None:
    ids = {add(queue).id for _ in range(100)}
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_claim_and_complete, args=(db_url, f"w{i}", start, out))
        for i in range(2)
    ]
    for proc in procs:
        proc.start()
    reports = [out.get(timeout=15) for _ in procs]
    for proc in procs:
        proc.join(timeout=15)
        assert proc.exitcode == 0

    got = {worker: taken for worker, taken, _ in reports}
    assert [refused for _, _, refused in reports] == [0, 0]
    first, second = got["w0"], got["w1"]
    assert len(first) + len(second) == 100
    assert set(first) | set(second) == ids
    assert not set(first) & set(second)
    assert first and second  # both really took part
    assert count_results(engine) == 100
    with engine.connect() as conn:
        rows = conn.execute(select(jobs.c.id, jobs.c.status, jobs.c.attempts)).all()
    assert {(status, attempts) for _, status, attempts in rows} == {("done", 1)}
