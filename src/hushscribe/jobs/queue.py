"""The durable job queue: enqueue, claim with a lease, heartbeat, complete, fail, cancel, purge.

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

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from hushscribe.errors import InvalidRequest
from hushscribe.jobs.tables import (
    CANCELLED,
    DONE,
    ERROR_CODE_MAX,
    FAILED,
    FILENAME_MAX,
    QUEUED,
    RUNNING,
    STATUSES,
    TASKS,
    TERMINAL_STATUSES,
    JobRecord,
    jobs,
    make_engine,
    new_job_id,
    results,
    writing,
)

__all__ = ["WORKER_LOST", "JobQueue", "JobRecord", "make_engine"]

WORKER_LOST: Final = "worker_lost"
_WORKER_LOST_MESSAGE: Final = (
    "the worker running this job stopped answering (crashed or was killed) and the job has "
    "used all its attempts, so it is not retried; resubmit it, and check the worker logs if "
    "this repeats"
)


class JobQueue:
    """Jobs in a database, shared by the API process and every worker process.

    ``owner`` arguments scope a call to one user's jobs; ``None`` means an administrator and
    reaches every job. An unknown job and another user's job give the same answer.
    """

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

    # --- producer side -------------------------------------------------------------------------

    def enqueue(
        self,
        owner: str,
        task: str,
        model: str,
        options: dict[str, Any],
        blob_path: str,
        blob_sha256: str,
        blob_bytes: int,
        filename: str | None,
        max_attempts: int = 3,
        priority: int = 0,
    ) -> JobRecord:
        """Add a queued job for ``owner`` and return it."""
        if task not in TASKS:
            raise InvalidRequest(f"unknown task {task!r}; use one of: {', '.join(TASKS)}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
        now = self._clock()
        values: dict[str, Any] = dict.fromkeys(jobs.c.keys()) | {
            "id": new_job_id(),
            "owner": owner,
            "task": task,
            "model": model,
            "options": dict(options),
            "status": QUEUED,
            "priority": priority,
            "attempts": 0,
            "max_attempts": max_attempts,
            "progress": 0.0,
            "blob_path": blob_path,
            "blob_sha256": blob_sha256,
            "blob_bytes": blob_bytes,
            "filename": None if filename is None else filename[:FILENAME_MAX],
            "created_at": now,
            "updated_at": now,
        }
        with self._write() as conn:
            conn.execute(insert(jobs).values(values))
        return JobRecord.from_row(values)

    # --- worker side ---------------------------------------------------------------------------

    def claim(
        self,
        worker_id: str,
        lease_seconds: float,
        models: Collection[str] | None = None,
        limit: int = 1,
    ) -> builtins.list[JobRecord]:
        """Take up to ``limit`` jobs for ``worker_id``: highest priority, then oldest, first.

        Queued jobs and running jobs whose lease expired (their worker died) are both taken, and
        each take counts as an attempt. An expired job that has used all its attempts is marked
        failed with ``worker_lost`` instead of being handed out again (by any claimer, whatever
        its models). ``models`` restricts the claim to jobs for those models (``None``: any).
        """
        if limit < 1 or (models is not None and not models):
            return []
        now = self._clock()
        expired = and_(jobs.c.status == RUNNING, jobs.c.lease_expires_at < now)
        claimable = or_(jobs.c.status == QUEUED, expired)
        model_filter = [] if models is None else [jobs.c.model.in_(builtins.list(models))]
        with self._write() as conn:
            lost = {
                "error_code": WORKER_LOST,
                "error_message": _WORKER_LOST_MESSAGE,
                "result_expires_at": self._expiry(now, None),
            }
            conn.execute(
                update(jobs)
                .where(expired, jobs.c.attempts >= jobs.c.max_attempts)
                .values(status=FAILED, finished_at=now, updated_at=now, **lost, **_NO_LEASE)
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
            mine = self._fetch(conn, jobs.c.id.in_(ids), *_lease_of(worker_id))
        return sorted(mine, key=lambda job: (-job.priority, job.created_at, job.id))

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
            done = conn.execute(update(jobs).where(*_held(job_id, worker_id)).values(values))
        return done.rowcount == 1

    def complete(
        self,
        job_id: str,
        worker_id: str,
        transcript_json: str,
        result_ttl_s: float | None,
        audio_seconds: float | None = None,
    ) -> bool:
        """Store the result and mark the job done, in one transaction.

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
        row = {"job_id": job_id, "transcript": transcript_json, "created_at": now}
        try:
            with self._write() as conn:
                done = conn.execute(
                    update(jobs)
                    .where(*_held(job_id, worker_id))
                    .values(finished_at=now, updated_at=now, **values, **_NO_LEASE)
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
            held = self._fetch(conn, *_held(job_id, worker_id))
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
                .where(*_held(job_id, worker_id))
                .values(updated_at=now, **values, **_NO_LEASE)
            )
        return final

    def requeue_worker(self, worker_id: str) -> int:
        """Put this worker's running jobs back in the queue, not counting the attempt.

        For a graceful shutdown: the jobs were not tried to the end. Returns how many.
        """
        now = self._clock()
        requeued = {"status": QUEUED, "attempts": jobs.c.attempts - 1, "progress": 0.0}
        with self._write() as conn:
            done = conn.execute(
                update(jobs)
                .where(*_lease_of(worker_id))
                .values(updated_at=now, **requeued, **_NO_LEASE)
            )
        return done.rowcount

    # --- owner side ----------------------------------------------------------------------------

    def get(self, job_id: str, owner: str | None) -> JobRecord | None:
        """The job, if it exists and belongs to ``owner`` (``None``: any owner)."""
        with self._read() as conn:
            found = self._fetch(conn, *_owned(job_id, owner))
        return found[0] if found else None

    def result(self, job_id: str, owner: str | None) -> str | None:
        """The stored transcript JSON of a done job of ``owner``, else None."""
        query = (
            select(results.c.transcript)
            .select_from(results.join(jobs, results.c.job_id == jobs.c.id))
            .where(*_owned(job_id, owner))
        )
        with self._read() as conn:
            transcript: str | None = conn.execute(query).scalar_one_or_none()
        return transcript

    def cancel(
        self, job_id: str, owner: str | None, ttl_s: float | None = None
    ) -> JobRecord | None:
        """Cancel a queued or running job of ``owner`` and return it; None if not theirs.

        A job already finished is returned unchanged. A running job's worker learns of the
        cancellation at its next heartbeat (False), and its result is refused. The job is kept
        ``ttl_s`` seconds (``None``: ``ended_ttl_s``).
        """
        now = self._clock()
        expires = self._expiry(now, ttl_s)
        values = {"status": CANCELLED, "finished_at": now, "result_expires_at": expires}
        with self._write() as conn:
            conn.execute(
                update(jobs)
                .where(*_owned(job_id, owner), jobs.c.status.in_((QUEUED, RUNNING)))
                .values(updated_at=now, **values, **_NO_LEASE)
            )
            found = self._fetch(conn, *_owned(job_id, owner))
        return found[0] if found else None

    def delete(self, job_id: str, owner: str | None) -> str | None:
        """Delete a job of ``owner`` and its result; return its blob path to purge, else None."""
        with self._write() as conn:
            found = self._fetch(conn, *_owned(job_id, owner))
            if not found:
                return None
            conn.execute(delete(results).where(results.c.job_id == job_id))
            conn.execute(delete(jobs).where(jobs.c.id == job_id))
        return found[0].blob_path

    def purge_expired(self, now: float | None = None) -> builtins.list[str]:
        """Delete finished jobs (and results) past their expiry; return their blob paths."""
        now = self._clock() if now is None else now
        expired = and_(
            jobs.c.result_expires_at <= now, jobs.c.status.in_(builtins.list(TERMINAL_STATUSES))
        )
        with self._write() as conn:
            rows = conn.execute(select(jobs.c.id, jobs.c.blob_path).where(expired)).all()
            ids = [row.id for row in rows]
            if ids:
                conn.execute(delete(results).where(results.c.job_id.in_(ids)))
                conn.execute(delete(jobs).where(jobs.c.id.in_(ids)))
        return [row.blob_path for row in rows]

    # --- overview ------------------------------------------------------------------------------

    def counts_by_status(self) -> dict[str, int]:
        """Number of jobs in each status, every status present."""
        query = select(jobs.c.status, func.count()).group_by(jobs.c.status)
        with self._read() as conn:
            counts = {str(row[0]): int(row[1]) for row in conn.execute(query)}
        return {status: counts.get(status, 0) for status in STATUSES}

    def queue_depth(self) -> int:
        """Number of jobs waiting for a worker."""
        query = select(func.count()).select_from(jobs).where(jobs.c.status == QUEUED)
        with self._read() as conn:
            return int(conn.execute(query).scalar_one())

    def wait_for(self, job_id: str, timeout_s: float, poll_s: float = 0.05) -> JobRecord:
        """Poll until the job is finished or ``timeout_s`` passed; return it as last seen.

        Raises LookupError if the job does not exist (or was deleted while waiting).
        """
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.get(job_id, None)
            if job is None:
                raise LookupError(f"job {job_id} does not exist")
            remaining = deadline - time.monotonic()
            if job.terminal or remaining <= 0:
                return job
            time.sleep(min(poll_s, remaining))

    def list(
        self, owner: str | None, limit: int = 50, after: str | None = None
    ) -> builtins.list[JobRecord]:
        """Jobs of ``owner`` (``None``: everyone's), newest first, at most ``limit``.

        ``after`` is the id of the last job of the previous page: the page continues past it, so
        pages stay stable while new jobs arrive. An ``after`` not visible to ``owner`` gives [].
        """
        query = select(jobs).where(*([] if owner is None else [jobs.c.owner == owner]))
        with self._read() as conn:
            if after is not None:
                cursor = conn.execute(
                    select(jobs.c.created_at, jobs.c.id).where(*_owned(after, owner))
                ).one_or_none()
                if cursor is None:
                    return []
                query = query.where(
                    or_(
                        jobs.c.created_at < cursor.created_at,
                        and_(jobs.c.created_at == cursor.created_at, jobs.c.id < cursor.id),
                    )
                )
            query = query.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit)
            return [JobRecord.from_row(row) for row in conn.execute(query).mappings()]


_NO_LEASE: Final[dict[str, Any]] = {"lease_owner": None, "lease_expires_at": None}


def _lease_of(worker_id: str) -> tuple[ColumnElement[bool], ...]:
    return (jobs.c.status == RUNNING, jobs.c.lease_owner == worker_id)


def _held(job_id: str, worker_id: str) -> tuple[ColumnElement[bool], ...]:
    return (jobs.c.id == job_id, *_lease_of(worker_id))


def _owned(job_id: str, owner: str | None) -> tuple[ColumnElement[bool], ...]:
    if owner is None:
        return (jobs.c.id == job_id,)
    return (jobs.c.id == job_id, jobs.c.owner == owner)
