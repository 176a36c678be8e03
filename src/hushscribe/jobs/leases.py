"""The worker side of the job queue: claim with a lease, heartbeat, complete, fail, requeue.

Workers are separate processes (ARCHITECTURE.md), so every state change is one database
transaction guarded by the state it expects (``status = 'running' AND lease_owner = :me``): a
worker that lost its lease, or a job cancelled under it, changes nothing and is told so.

Claims are atomic across processes. On PostgreSQL the candidate rows are read with
``FOR UPDATE SKIP LOCKED``; on SQLite every writing transaction starts with ``BEGIN IMMEDIATE``,
which takes the database's single write lock before the first read, so two claimers are serialised
and neither can read a row the other is taking.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Final

from sqlalchemy import ColumnElement, Connection, Engine, and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from hushscribe.db import writing
from hushscribe.jobs.tables import (
    DONE,
    ERROR_CODE_MAX,
    FAILED,
    QUEUED,
    RUNNING,
    JobRecord,
    jobs,
    results,
)

WORKER_LOST: Final = "worker_lost"
_WORKER_LOST_MESSAGE: Final = (
    "the worker running this job stopped answering (crashed or was killed) and the job has "
    "used all its attempts, so it is not retried; resubmit it, and check the worker logs if "
    "this repeats"
)


NO_LEASE: Final[dict[str, Any]] = {"lease_owner": None, "lease_expires_at": None}


class LeasedQueue:
    """Jobs in a database, as the workers that run them see it (``JobQueue`` adds the owners')."""

    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], float] = time.time,
        ended_ttl_s: float | None = None,
    ) -> None:
        """``ended_ttl_s``: how long failed and cancelled jobs are kept when a call names no
        ``ttl_s`` (``None``: until deleted). ``clock`` gives epoch seconds (tests move it)."""
        self._engine = engine
        self._clock = clock
        self._ended_ttl_s = ended_ttl_s

    @property
    def engine(self) -> Engine:
        """The database engine, for other tables kept in the same database."""
        return self._engine

    # --- transactions --------------------------------------------------------------------------

    def _write(self) -> AbstractContextManager[Connection]:
        return writing(self._engine)

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._engine.connect() as conn, conn.begin():
            yield conn

    def _expiry(self, now: float, ttl_s: float | None) -> float | None:
        ttl = self._ended_ttl_s if ttl_s is None else ttl_s
        return None if ttl is None else now + ttl

    def _fetch(self, conn: Connection, *where: ColumnElement[bool]) -> builtins.list[JobRecord]:
        rows = conn.execute(select(jobs).where(*where)).mappings()
        return [JobRecord.from_row(row) for row in rows]

    def claim(
        self,
        worker_id: str,
        lease_seconds: float,
        models: Collection[str] | None = None,
        limit: int = 1,
        ids: Collection[str] | None = None,
    ) -> builtins.list[JobRecord]:
        """Take up to ``limit`` jobs for ``worker_id``: highest priority, then oldest, first.

        Queued jobs and running jobs whose lease expired (their worker died) are both taken, and
        each take counts as an attempt. An expired job that has used all its attempts is marked
        failed with ``worker_lost`` instead of being handed out again (by any claimer, whatever
        its models). ``models`` restricts the claim to jobs for those models (``None``: any), and
        ``ids`` to those jobs (``None``: any).
        """
        if limit < 1 or (models is not None and not models) or (ids is not None and not ids):
            return []
        now = self._clock()
        expired = and_(jobs.c.status == RUNNING, jobs.c.lease_expires_at < now)
        claimable = or_(jobs.c.status == QUEUED, expired)
        model_filter = [] if models is None else [jobs.c.model.in_(builtins.list(models))]
        if ids is not None:
            model_filter.append(jobs.c.id.in_(builtins.list(ids)))
        with self._write() as conn:
            lost = {
                "error_code": WORKER_LOST,
                "error_message": _WORKER_LOST_MESSAGE,
                "result_expires_at": self._expiry(now, None),
            }
            conn.execute(
                update(jobs)
                .where(expired, jobs.c.attempts >= jobs.c.max_attempts)
                .values(status=FAILED, finished_at=now, updated_at=now, **lost, **NO_LEASE)
            )
            candidates = (
                select(jobs.c.id)
                .where(claimable, *model_filter)
                .order_by(jobs.c.priority.desc(), jobs.c.created_at, jobs.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True)  # PostgreSQL; SQLite holds the write lock
            )
            ids = conn.execute(candidates).scalars().all()
            if not ids:
                return []
            taken = {
                "status": RUNNING,
                "lease_owner": worker_id,
                "lease_expires_at": now + lease_seconds,
                "attempts": jobs.c.attempts + 1,
                "progress": 0.0,
            }
            conn.execute(
                update(jobs)
                .where(jobs.c.id.in_(ids), claimable)
                .values(started_at=now, updated_at=now, **taken)
            )
            mine = self._fetch(conn, jobs.c.id.in_(ids), *leased_by(worker_id))
        return sorted(mine, key=lambda job: (-job.priority, job.created_at, job.id))

    def queued(self, model: str, limit: int) -> builtins.list[JobRecord]:
        """Queued jobs for ``model`` in the order claims take them (a read: no lock is taken)."""
        query = (
            select(jobs)
            .where(jobs.c.status == QUEUED, jobs.c.model == model)
            .order_by(jobs.c.priority.desc(), jobs.c.created_at, jobs.c.id)
            .limit(limit)
        )
        with self._read() as conn:
            return [JobRecord.from_row(row) for row in conn.execute(query).mappings()]

    def heartbeat(
        self,
        job_id: str,
        worker_id: str,
        lease_seconds: float,
        progress: float | None = None,
        audio_seconds: float | None = None,
    ) -> bool:
        """Extend the lease (and record progress); False if this worker no longer holds the job.

        A False answer means stop: the job was cancelled, deleted or taken by another worker.
        """
        now = self._clock()
        values: dict[str, Any] = {"lease_expires_at": now + lease_seconds, "updated_at": now}
        if progress is not None:
            values["progress"] = min(max(progress, 0.0), 1.0)
        if audio_seconds is not None:
            values["audio_seconds"] = audio_seconds
        with self._write() as conn:
            done = conn.execute(update(jobs).where(*held_by(job_id, worker_id)).values(values))
        return done.rowcount == 1

    def complete(
        self,
        job_id: str,
        worker_id: str,
        transcript_json: str,
        result_ttl_s: float | None,
        audio_seconds: float | None = None,
        model_used: str | None = None,
    ) -> bool:
        """Store the result and mark the job done, in one transaction (``model_used``: the model
        that served it, after any fallback along an alias's chain).

        Only the worker holding the lease of a running job may do it; any other call (a second
        complete, a lost lease, a cancelled job) stores nothing and returns False. The job and
        result are kept ``result_ttl_s`` seconds (``None``: until deleted).
        """
        now = self._clock()
        values: dict[str, Any] = {
            "status": DONE,
            "progress": 1.0,
            "error_code": None,
            "error_message": None,
            "result_expires_at": None if result_ttl_s is None else now + result_ttl_s,
        }
        if audio_seconds is not None:
            values["audio_seconds"] = audio_seconds
        if model_used is not None:
            values["model_used"] = model_used
        row = {"job_id": job_id, "transcript": transcript_json, "created_at": now}
        try:
            with self._write() as conn:
                done = conn.execute(
                    update(jobs)
                    .where(*held_by(job_id, worker_id))
                    .values(finished_at=now, updated_at=now, **values, **NO_LEASE)
                )
                if done.rowcount != 1:
                    return False
                conn.execute(insert(results).values(row))
        except IntegrityError:  # a result already exists: the primary key refused a second one
            return False
        return True

    def fail(
        self,
        job_id: str,
        worker_id: str,
        code: str,
        message: str,
        retry: bool,
        ttl_s: float | None = None,
    ) -> bool:
        """Record a failure of the job this worker holds.

        With ``retry`` the job goes back to the queue while attempts remain; otherwise it is
        failed for good and kept ``ttl_s`` seconds (``None``: ``ended_ttl_s``). Returns True only
        when the job is now failed for good (its audio may be purged); False when it went back to
        the queue or this worker no longer held it.
        """
        now = self._clock()
        with self._write() as conn:
            held = self._fetch(conn, *held_by(job_id, worker_id))
            if not held:
                return False
            final = not (retry and held[0].attempts < held[0].max_attempts)
            values: dict[str, Any] = {"error_code": code[:ERROR_CODE_MAX], "error_message": message}
            if final:
                expires = self._expiry(now, ttl_s)
                values |= {"status": FAILED, "finished_at": now, "result_expires_at": expires}
            else:
                values |= {"status": QUEUED, "progress": 0.0}
            conn.execute(
                update(jobs)
                .where(*held_by(job_id, worker_id))
                .values(updated_at=now, **values, **NO_LEASE)
            )
        return final

    def fail_queued(self, job_id: str, code: str, message: str) -> bool:
        """Fail a job still waiting in the queue (its file hung a worker that only looked at it
        for a batch): True if it was queued."""
        now = self._clock()
        values = {"error_code": code[:ERROR_CODE_MAX], "error_message": message}
        with self._write() as conn:
            done = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status == QUEUED)
                .values(status=FAILED, finished_at=now, updated_at=now,
                        result_expires_at=self._expiry(now, None), **values)
            )  # fmt: skip
        return done.rowcount == 1

    def requeue_worker(self, worker_id: str) -> int:
        """Put this worker's running jobs back in the queue, not counting the attempt.

        For a graceful shutdown: the jobs were not tried to the end. Returns how many.
        """
        now = self._clock()
        requeued = {"status": QUEUED, "attempts": jobs.c.attempts - 1, "progress": 0.0}
        with self._write() as conn:
            done = conn.execute(
                update(jobs)
                .where(*leased_by(worker_id))
                .values(updated_at=now, **requeued, **NO_LEASE)
            )
        return done.rowcount


def leased_by(worker_id: str) -> tuple[ColumnElement[bool], ...]:
    return (jobs.c.status == RUNNING, jobs.c.lease_owner == worker_id)


def held_by(job_id: str, worker_id: str) -> tuple[ColumnElement[bool], ...]:
    return (jobs.c.id == job_id, *leased_by(worker_id))
