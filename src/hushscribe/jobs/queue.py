"""The durable job queue: what API callers do with jobs (enqueue, read, cancel, delete, list,
purge), on top of the worker side in ``leases.py``. ``owner`` arguments scope a call to one
user's jobs; ``None`` means an administrator and reaches every job. An unknown job and another
user's job give the same answer.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Collection
from typing import Any, Final, Protocol

from sqlalchemy import ColumnElement, Select, and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import DBAPIError

from hushscribe.db import make_engine
from hushscribe.errors import InsufficientStorage, InvalidRequest, QueueFull, is_storage_full
from hushscribe.jobs.leases import NO_LEASE, WORKER_LOST, LeasedQueue
from hushscribe.jobs.tables import (
    CANCELLED,
    FILENAME_MAX,
    QUEUED,
    RUNNING,
    STATUSES,
    TASKS,
    TERMINAL_STATUSES,
    JobRecord,
    jobs,
    new_job_id,
    results,
)

__all__ = ["WORKER_LOST", "JobQueue", "JobRecord", "make_engine"]

_IN_CHUNK: Final = 500
"""Values per ``IN (…)`` list: well under SQLite's and PostgreSQL's limits on bound parameters."""


class JobQueue(LeasedQueue):
    """Jobs in a database, shared by the API process and every worker process."""

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
        queue_max: int | None = None,
    ) -> JobRecord:
        """Add a queued job for ``owner`` and return it.

        With ``queue_max``, :class:`QueueFull` if that many jobs are already queued: counted in
        the same write transaction as the insert, so requests racing each other cannot pass it
        together. A full disk raises :class:`InsufficientStorage`.
        """
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
        try:
            with self._write() as conn:
                if queue_max is not None:
                    if conn.dialect.name == "postgresql":  # on SQLite, BEGIN IMMEDIATE is one
                        lock = func.hashtext("hushscribe.enqueue")  # at a time; here, this lock
                        conn.execute(select(func.pg_advisory_xact_lock(lock)))
                    depth = conn.execute(
                        select(func.count()).select_from(jobs).where(jobs.c.status == QUEUED)
                    ).scalar_one()
                    if depth >= queue_max:
                        raise QueueFull(
                            f"the queue holds {queue_max} jobs; retry in a little while"
                        )
                conn.execute(insert(jobs).values(values))
        except DBAPIError as exc:
            if is_storage_full(exc):
                raise InsufficientStorage(
                    "the server's disk is full: the job could not be recorded; retry later, "
                    "and tell the operator if this persists"
                ) from exc
            raise
        return JobRecord.from_row(values)

    # --- owner side ----------------------------------------------------------------------------

    def get(self, job_id: str, who: Who, content: bool = False) -> JobRecord | None:
        """The job, if ``who`` may see it: its owner, or (its metadata, not ``content``) an
        admin. ``None``: any owner (the service itself)."""
        with self._read() as conn:
            found = self._fetch(conn, *_owned(job_id, _owner(who, content)))
        return found[0] if found else None

    def result(self, job_id: str, who: Who) -> str | None:
        """The stored transcript JSON of a done job of ``who`` (its owner only), else None."""
        owner = _owner(who, content=True)
        query = _result_query(job_id, owner)
        with self._read() as conn:
            transcript: str | None = conn.execute(query).scalar_one_or_none()
        return transcript

    def change_result(
        self, job_id: str, owner: str | None, change: Callable[[str], str]
    ) -> str | None:
        """Rewrite a done job's stored transcript JSON with ``change`` (one transaction: two
        edits at once both land) and return the new one; None when ``owner`` (None: any) has no
        such result. An error ``change`` raises leaves the result as it was. The row is locked
        while ``change`` runs (PostgreSQL: FOR UPDATE; SQLite: the write transaction's lock)."""
        query = _result_query(job_id, owner).with_for_update(of=results)
        with self._write() as conn:
            current: str | None = conn.execute(query).scalar_one_or_none()
            if current is None:
                return None
            changed = change(current)
            conn.execute(
                update(results).where(results.c.job_id == job_id).values(transcript=changed)
            )
        return changed

    def cancel(self, job_id: str, who: Who, ttl_s: float | None = None) -> JobRecord | None:
        """Cancel a queued or running job of ``owner`` and return it; None if not theirs.

        A job already finished is returned unchanged. A running job's worker learns of the
        cancellation at its next heartbeat (False), and its result is refused. The job is kept
        ``ttl_s`` seconds (``None``: ``ended_ttl_s``). Only the owner may cancel.
        """
        owner = _owner(who, content=True)
        now = self._clock()
        expires = self._expiry(now, ttl_s)
        values = {"status": CANCELLED, "finished_at": now, "result_expires_at": expires}
        with self._write() as conn:
            conn.execute(
                update(jobs)
                .where(*_owned(job_id, owner), jobs.c.status.in_((QUEUED, RUNNING)))
                .values(updated_at=now, **values, **NO_LEASE)
            )
            found = self._fetch(conn, *_owned(job_id, owner))
        return found[0] if found else None

    def delete(self, job_id: str, who: Who) -> str | None:
        """Delete a job of ``who`` (its owner only) and its result; return its blob path to
        purge, else None."""
        owner = _owner(who, content=True)
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

    def blobs_in_use(self, paths: Collection[str], ended: bool) -> set[str]:
        """Those of ``paths`` that a queued or running job needs (with ``ended``: any job)."""
        needed = [] if ended else [jobs.c.status.in_((QUEUED, RUNNING))]
        found: set[str] = set()
        chunk = builtins.list(paths)
        with self._read() as conn:
            for i in range(0, len(chunk), _IN_CHUNK):
                query = select(jobs.c.blob_path).where(
                    jobs.c.blob_path.in_(chunk[i : i + _IN_CHUNK]), *needed
                )
                found.update(conn.execute(query).scalars())
        return found

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

    def list(self, who: Who, limit: int = 50, after: str | None = None) -> builtins.list[JobRecord]:
        """Jobs ``who`` may see (their own; an admin's: everyone's), newest first, at most
        ``limit``.

        ``after`` is the id of the last job of the previous page: the page continues past it, so
        pages stay stable while new jobs arrive. An ``after`` not visible to ``who`` gives [].
        """
        owner = _owner(who, content=False)
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


class Viewer(Protocol):
    """Who asks (a signed-in principal): the queries below decide what they may see."""

    @property
    def user_id(self) -> str: ...

    @property
    def sees_all_jobs(self) -> bool: ...


Who = Viewer | str | None
"""A principal, an owner id, or ``None`` (the service itself: any job)."""


def _owner(who: Who, content: bool) -> str | None:
    """The owner id a query is limited to: the viewer's own, except that admins see every job's
    metadata (never its transcript or audio: ``content``)."""
    if who is None or isinstance(who, str):
        return who
    return None if who.sees_all_jobs and not content else who.user_id


def _result_query(job_id: str, owner: str | None) -> Select[Any]:
    """A done job's transcript JSON, where ``owner`` (None: anyone) owns the job."""
    return (
        select(results.c.transcript)
        .select_from(results.join(jobs, results.c.job_id == jobs.c.id))
        .where(*_owned(job_id, owner))
    )


def _owned(job_id: str, owner: str | None) -> tuple[ColumnElement[bool], ...]:
    if owner is None:
        return (jobs.c.id == job_id,)
    return (jobs.c.id == job_id, jobs.c.owner == owner)
