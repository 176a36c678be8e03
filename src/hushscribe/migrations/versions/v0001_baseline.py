"""Baseline: the schema as the release before migrations (commit 7a4d5be) created it.

Revision ID: 0001
Revises:
Create Date: 2026-12-01

That release ran ``metadata.create_all`` at every start, and created ``stats`` and ``workers``
only when a process first used them, so its databases hold all of these tables or some. This
revision creates each table (with its indexes) that is missing and leaves the others as they are:
on an empty database it builds the whole schema, on one of that release's it adopts it, data and
all. The definitions are frozen copies, never the live tables, which move on in later revisions.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

STATUSES = "status IN ('queued', 'running', 'done', 'failed', 'cancelled')"


def _missing(name: str) -> bool:
    return not sa.inspect(op.get_bind()).has_table(name)


def upgrade() -> None:
    if _missing("jobs"):
        op.create_table(
            "jobs",
            sa.Column("id", sa.String(32), primary_key=True),
            sa.Column("owner", sa.String(255), nullable=False),
            sa.Column("task", sa.String(16), nullable=False),
            sa.Column("model", sa.String(255), nullable=False),
            sa.Column("options", sa.JSON, nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("priority", sa.Integer, nullable=False),
            sa.Column("attempts", sa.Integer, nullable=False),
            sa.Column("max_attempts", sa.Integer, nullable=False),
            sa.Column("lease_owner", sa.String(255), nullable=True),
            sa.Column("lease_expires_at", sa.Float, nullable=True),
            sa.Column("progress", sa.Float, nullable=False),
            sa.Column("audio_seconds", sa.Float, nullable=True),
            sa.Column("blob_path", sa.Text, nullable=False),
            sa.Column("blob_sha256", sa.String(64), nullable=False),
            sa.Column("blob_bytes", sa.BigInteger, nullable=False),
            sa.Column("filename", sa.String(255), nullable=True),
            sa.Column("error_code", sa.String(64), nullable=True),
            sa.Column("error_message", sa.Text, nullable=True),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("started_at", sa.Float, nullable=True),
            sa.Column("finished_at", sa.Float, nullable=True),
            sa.Column("updated_at", sa.Float, nullable=False),
            sa.Column("result_expires_at", sa.Float, nullable=True),
            sa.CheckConstraint(STATUSES, name="ck_jobs_status"),
            sa.CheckConstraint("task IN ('transcribe', 'translate')", name="ck_jobs_task"),
            sa.CheckConstraint("progress >= 0 AND progress <= 1", name="ck_jobs_progress"),
            sa.CheckConstraint("attempts >= 0 AND max_attempts >= 1", name="ck_jobs_attempts"),
        )
        op.create_index("ix_jobs_claim", "jobs", ["status", sa.text("priority DESC"), "created_at"])
        op.create_index("ix_jobs_lease", "jobs", ["status", "lease_expires_at"])
        op.create_index("ix_jobs_owner_created", "jobs", ["owner", "created_at"])
        op.create_index("ix_jobs_result_expires", "jobs", ["result_expires_at"])
    if _missing("results"):
        op.create_table(
            "results",
            sa.Column("job_id", sa.String(32), primary_key=True),
            sa.Column("transcript", sa.Text, nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        )
    if _missing("stats"):
        op.create_table(
            "stats",
            sa.Column("key", sa.String(128), primary_key=True),
            sa.Column("value", sa.Float, nullable=False),
        )
    if _missing("workers"):
        op.create_table(
            "workers",
            sa.Column("id", sa.String(255), primary_key=True),
            sa.Column("host", sa.String(255), nullable=False),
            sa.Column("pid", sa.Integer, nullable=False),
            sa.Column("started_at", sa.Float, nullable=False),
            sa.Column("last_seen", sa.Float, nullable=False),
            sa.Column("models", sa.JSON, nullable=False),
        )
    _identity()


def _identity() -> None:
    if _missing("users"):
        op.create_table(
            "users",
            sa.Column("id", sa.String(32), primary_key=True),
            sa.Column("username", sa.String(128), nullable=False, unique=True),
            sa.Column("password_hash", sa.Text, nullable=True),
            sa.Column("source", sa.String(8), nullable=False),
            sa.Column("role", sa.String(16), nullable=False),
            sa.Column("disabled", sa.Boolean, nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("updated_at", sa.Float, nullable=False),
            sa.Column("last_login_at", sa.Float, nullable=True),
            sa.CheckConstraint("role IN ('admin', 'user', 'auditor')", name="ck_users_role"),
            sa.CheckConstraint("source IN ('local', 'ldap')", name="ck_users_source"),
        )
    if _missing("api_keys"):
        op.create_table(
            "api_keys",
            sa.Column("id", sa.String(32), primary_key=True),
            sa.Column("user_id", sa.String(32), nullable=False),
            sa.Column("name", sa.String(128), nullable=False),
            sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
            sa.Column("prefix", sa.String(16), nullable=False),
            sa.Column("scopes", sa.JSON, nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("expires_at", sa.Float, nullable=True),
            sa.Column("last_used_at", sa.Float, nullable=True),
            sa.Column("revoked_at", sa.Float, nullable=True),
            sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        )
        op.create_index("ix_api_keys_user", "api_keys", ["user_id"])
    if _missing("sessions"):
        op.create_table(
            "sessions",
            sa.Column("id_hash", sa.String(64), primary_key=True),
            sa.Column("user_id", sa.String(32), nullable=False),
            sa.Column("method", sa.String(16), nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("last_seen_at", sa.Float, nullable=False),
            sa.Column("expires_at", sa.Float, nullable=False),
            sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        )
        op.create_index("ix_sessions_user", "sessions", ["user_id"])
        op.create_index("ix_sessions_expires", "sessions", ["expires_at"])


def downgrade() -> None:
    for name in ("sessions", "api_keys", "users", "workers", "stats", "results", "jobs"):
        op.drop_table(name)
