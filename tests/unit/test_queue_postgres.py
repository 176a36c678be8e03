"""What only PostgreSQL does for the queue, on a real server (``tests/pg.py``): row locks that
concurrent claimers skip, the advisory lock behind ``queue_max``, and the column types.

Every other queue test runs on PostgreSQL too (``test_queue.py``, parametrized over both)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, text

from hushscribe.db import make_engine
from hushscribe.errors import QueueFull
from hushscribe.jobs.queue import JobQueue
from hushscribe.jobs.tables import jobs
from tests.pg import PgServer


@pytest.fixture
def engine(pg_server: PgServer) -> Iterator[Engine]:
    url = pg_server.create_database("test_queue_postgres")
    # A claim that waited for a row lock instead of skipping it fails after 5 s, not never.
    engine = make_engine(url, upgrade=True, connect_args={"options": "-c lock_timeout=5000"})
    yield engine
    engine.dispose()
    pg_server.drop_database(url)


def _add(queue: JobQueue, n: int, queue_max: int | None = None) -> str:
    blob = f"/blobs/{n}"
    return queue.enqueue("alice", "transcribe", "base", {}, blob, "0" * 64, 1, "a.wav",
                         queue_max=queue_max).id  # fmt: skip


def test_claim_skips_the_rows_another_claimer_holds(engine: Engine) -> None:
    clock = iter(range(1_700_000_000, 1_800_000_000))
    queue = JobQueue(engine, clock=lambda: float(next(clock)))
    first, second = _add(queue, 1), _add(queue, 2)
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    with engine.connect() as other, other.begin():
        # Another claimer, inside its transaction, has locked the oldest job.
        locked = select(jobs.c.id).where(jobs.c.id == first).with_for_update()
        assert other.execute(locked).scalar_one() == first
        assert [j.id for j in queue.claim("w1", 30)] == [second]  # not blocked: skipped
        assert queue.claim("w2", 30) == []
    event.remove(engine, "before_cursor_execute", record)
    assert any("FOR UPDATE SKIP LOCKED" in s for s in statements), statements
    [freed] = queue.claim("w2", 30)  # the other transaction ended without taking it
    assert (freed.id, freed.lease_owner, freed.attempts) == (first, "w2", 1)


def test_queue_max_holds_for_concurrent_enqueues(engine: Engine) -> None:
    queue = JobQueue(engine)
    start = threading.Barrier(8)
    outcomes: list[str] = []

    def enqueue(n: int) -> None:
        start.wait()
        try:
            _add(queue, n, queue_max=3)
            outcomes.append("queued")
        except QueueFull:
            outcomes.append("full")

    threads = [threading.Thread(target=enqueue, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["full"] * 5 + ["queued"] * 3
    assert queue.queue_depth() == 3


def test_column_types(engine: Engine) -> None:
    """Times are double precision (epoch seconds with their fraction), sizes past 2 GiB fit,
    options are JSON and flags real booleans."""
    query = text(
        "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema()"
    )
    with engine.connect() as conn:
        types = {str(row[0]): str(row[1]) for row in conn.execute(query)}
    assert {
        name: types[name]
        for name in ("jobs.created_at", "jobs.lease_expires_at", "jobs.blob_bytes",
                     "jobs.options", "users.disabled", "api_keys.scopes", "sessions.expires_at")
    } == {
        "jobs.created_at": "double precision",
        "jobs.lease_expires_at": "double precision",
        "jobs.blob_bytes": "bigint",
        "jobs.options": "json",
        "users.disabled": "boolean",
        "api_keys.scopes": "json",
        "sessions.expires_at": "double precision",
    }  # fmt: skip


def test_two_edits_of_one_result_at_once_both_land(engine: Engine) -> None:
    """Two renames of one transcript at the same moment: the second waits for the first's row
    lock and edits what the first stored, so neither edit is lost."""
    queue = JobQueue(engine)
    job_id = _add(queue, 1)
    [job] = queue.claim("w1", 30)
    assert queue.complete(job.id, "w1", "", result_ttl_s=None)
    inside = threading.Barrier(2, timeout=2)

    def edit(mark: str) -> None:
        def change(current: str) -> str:
            # Both read at once, unless one waits for the other's lock (then the barrier
            # breaks after 2 s: the other was made to wait, as it should).
            with contextlib.suppress(threading.BrokenBarrierError):
                inside.wait()
            return current + mark

        queue.change_result(job_id, None, change)

    threads = [threading.Thread(target=edit, args=(m,)) for m in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT transcript FROM results")).scalar_one()
    assert sorted(stored) == ["a", "b"], stored
