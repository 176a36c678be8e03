"""Alembic's environment, configured by :mod:`hushscribe.schema` (no ``alembic.ini``).

The caller hands over an open connection in ``config.attributes["connection"]``, already inside
the one transaction every migration runs in (``BEGIN IMMEDIATE`` on SQLite, an advisory lock on
PostgreSQL), so concurrent starts never migrate twice. Offline SQL generation is not offered.

A new revision, after changing a table (the test ``test_head_matches_metadata`` fails until then)::

    .venv/bin/python -c "from hushscribe import schema; schema.new_revision('what changed')"

then read and edit the generated ``versions/v<rev>_<slug>.py``: SQLite changes go through
``op.batch_alter_table``; a revision must never import the live tables (they move on).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from hushscribe.schema import load_metadata


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError("hushscribe migrations run through hushscribe.schema, with a connection")
    context.configure(
        connection=connection,
        target_metadata=load_metadata(),
        # SQLite alters most things by copying the table: batch mode does it (add_column stays
        # a plain ALTER TABLE ADD COLUMN).
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        transaction_per_migration=False,
        on_version_apply=context.config.attributes.get("on_version_apply", ()),
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("hushscribe migrations run against a database, not as SQL scripts")
run_migrations_online()
