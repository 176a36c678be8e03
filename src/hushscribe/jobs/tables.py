"""The job database: tables in SQLAlchemy Core, the row record, and the engine set-up.

The tables run on SQLite and PostgreSQL alike: only portable types, and check constraints that
keep both databases honest about the closed sets (status, task). Every time is a float of seconds
since the Unix epoch (UTC), written by the queue's clock: one representation on both databases,
no time-zone conversion, and lease arithmetic (``now + lease``) in plain SQL.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
)

from hushscribe.db import metadata

QUEUED: Final = "queued"
RUNNING: Final = "running"
DONE: Final = "done"
FAILED: Final = "failed"
CANCELLED: Final = "cancelled"

STATUSES: Final = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)
TERMINAL_STATUSES: Final = frozenset({DONE, FAILED, CANCELLED})
TASKS: Final = ("transcribe", "translate")

# Limits of the stored strings. A filename is the caller's and only shown back to them: 255 is
# what every common filesystem allows, so nothing real is cut. Owners and worker ids are ours.
FILENAME_MAX: Final = 255
OWNER_MAX: Final = 255
WORKER_ID_MAX: Final = 255
MODEL_MAX: Final = 255
ERROR_CODE_MAX: Final = 64


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


jobs = Table(
    "jobs",
    metadata,
    # 32 hex chars of secrets.token_hex(16): 128 random bits, so ids cannot be guessed.
    Column("id", String(32), primary_key=True),
    Column("owner", String(OWNER_MAX), nullable=False),
    Column("task", String(16), nullable=False),
    Column("model", String(MODEL_MAX), nullable=False),
    Column("options", JSON, nullable=False),
    Column("status", String(16), nullable=False),  # indexed first in ix_jobs_claim
    Column("priority", Integer, nullable=False, default=0),
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False),
    Column("lease_owner", String(WORKER_ID_MAX), nullable=True),
    Column("lease_expires_at", Float, nullable=True),
    Column("progress", Float, nullable=False, default=0.0),
    Column("audio_seconds", Float, nullable=True),
    Column("blob_path", Text, nullable=False),
    Column("blob_sha256", String(64), nullable=False),
    # BigInteger: the upload cap is 2 GiB by default, past a 32-bit PostgreSQL integer.
    Column("blob_bytes", BigInteger, nullable=False),
    Column("filename", String(FILENAME_MAX), nullable=True),
    Column("error_code", String(ERROR_CODE_MAX), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    Column("updated_at", Float, nullable=False),
    # When the job, its result and its audio may be purged; NULL keeps them until deleted.
    Column("result_expires_at", Float, nullable=True),
    # The model that served the job, after any fallback along an alias chain (schema 0002).
    Column("model_used", String(MODEL_MAX), nullable=True),
    CheckConstraint(_in("status", STATUSES), name="ck_jobs_status"),
    CheckConstraint(_in("task", TASKS), name="ck_jobs_task"),
    CheckConstraint("progress >= 0 AND progress <= 1", name="ck_jobs_progress"),
    CheckConstraint("attempts >= 0 AND max_attempts >= 1", name="ck_jobs_attempts"),
)

# Claiming reads "status = 'queued' ORDER BY priority DESC, created_at": this index serves it
# in order, so a claim touches only the rows it takes.
Index("ix_jobs_claim", jobs.c.status, jobs.c.priority.desc(), jobs.c.created_at)
# Expired leases: "status = 'running' AND lease_expires_at < now".
Index("ix_jobs_lease", jobs.c.status, jobs.c.lease_expires_at)
# A user's job list, newest first.
Index("ix_jobs_owner_created", jobs.c.owner, jobs.c.created_at)
# Retention sweep.
Index("ix_jobs_result_expires", jobs.c.result_expires_at)

results = Table(
    "results",
    metadata,
    # The primary key makes job_id unique: exactly one result per job, enforced by the database.
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    # JSON of the canonical Transcript.
    Column("transcript", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One row of ``jobs``, as read. Times are epoch seconds (UTC)."""

    id: str
    owner: str
    task: str
    model: str
    options: dict[str, Any]
    status: str
    priority: int
    attempts: int
    max_attempts: int
    lease_owner: str | None
    lease_expires_at: float | None
    progress: float
    audio_seconds: float | None
    blob_path: str
    blob_sha256: str
    blob_bytes: int
    filename: str | None
    error_code: str | None
    error_message: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float
    result_expires_at: float | None
    model_used: str | None = None

    @property
    def terminal(self) -> bool:
        """True once the job can no longer change (done, failed or cancelled)."""
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> JobRecord:
        return cls(**dict(row))


def new_job_id() -> str:
    """128 random bits as 32 hex characters."""
    return secrets.token_hex(16)
