"""jobs.model_used: the model that actually served a job (after a fallback along an alias chain).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

Nullable, no default: jobs of earlier releases keep NULL (not known), queued ones get it when a
worker serves them. On SQLite a plain ``ALTER TABLE ADD COLUMN``: no table copy, instant on any
size of queue.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("model_used", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:  # SQLite: a copy of the table, rows and all
        batch.drop_column("model_used")
    if op.get_bind().dialect.name == "sqlite":
        # The copy rebuilds indexes from reflection, which drops DESC: the claim index as 0001
        # made it (any revision that copies ``jobs`` must do the same).
        op.drop_index("ix_jobs_claim", "jobs")
        op.create_index("ix_jobs_claim", "jobs", ["status", sa.text("priority DESC"), "created_at"])
