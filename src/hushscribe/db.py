"""The one database: its metadata (every table registers here), the engine set-up, and writing
transactions. Jobs (``jobs/tables.py``) and identity (``security/tables.py``) define their tables on
``metadata``; Alembic owns the schema (``schema.py``, ``migrations/``), and :func:`make_engine`
upgrades or checks it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Connection, Engine, MetaData, create_engine, event, make_url
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.schema import Table

from hushscribe.fsutil import private_dir

metadata = MetaData()

# How long an SQLite connection waits for another process's write lock before failing. Claims and
# updates hold the lock for milliseconds; 30 s rides out a slow disk without hanging forever.
SQLITE_BUSY_TIMEOUT_MS: Final = 30_000

IMMEDIATE: Final = "hushscribe_sqlite_immediate"
"""Execution option: begin this connection's transactions with ``BEGIN IMMEDIATE`` on SQLite."""


def make_engine(url: str, *, upgrade: bool | None = None, **kwargs: Any) -> Engine:
    """Create the engine for ``url``, with its schema at the revision this hushscribe needs.

    ``upgrade``: True migrates the database to it (creating every table of an empty one), False
    only checks and raises :class:`hushscribe.schema.SchemaMismatch` when it is elsewhere, None
    (the ``database_auto_upgrade`` setting's default) upgrades SQLite — one host, the server owns
    its file — and checks PostgreSQL, which several nodes share: ``hushscribe db upgrade`` runs
    once before they roll out.
    """
    from hushscribe import schema

    engine = connect_engine(url, **kwargs)
    if upgrade is None:
        upgrade = engine.dialect.name == "sqlite"
    try:
        if upgrade:
            schema.upgrade(engine)
        else:
            schema.check(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def connect_engine(url: str, **kwargs: Any) -> Engine:
    """The engine for ``url``, configured, its schema untouched (``hushscribe db`` uses it).

    SQLite gets WAL (readers never block the writer), ``synchronous=FULL`` (a committed job
    survives power loss), a busy timeout, enforced foreign keys, and transactions that this module
    begins itself so that writes can use ``BEGIN IMMEDIATE``.
    """
    if make_url(url).get_backend_name() == "sqlite":
        _private_database_file(make_url(url).database)
        engine = create_engine(url, **kwargs)
        _configure_sqlite(engine)
    else:  # a server database: connections can die between uses, so test them on checkout
        engine = create_engine(url, pool_pre_ping=True, **kwargs)
    return engine


def _private_database_file(database: str | None) -> None:
    """Create the SQLite file readable by this user only (0600), or make an existing one so: it
    holds every owner's transcripts and file names. SQLite gives the ``-wal`` and ``-shm`` files
    it creates the main file's mode; those left by an older version are tightened too."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return  # in memory, or a URI whose options say where and how
    if not Path(database).parent.exists():  # a new data directory: made, private (an existing
        private_dir(Path(database).parent)  # one is the operator's: /tmp must stay /tmp)
    if not Path(database).exists():
        # Never open (and close) a file SQLite may already hold in this process: closing any
        # descriptor of it drops every POSIX lock the process has on it, SQLite's included,
        # and readers then see stale pages. Only a missing file is created here.
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        with contextlib.suppress(FileExistsError):
            os.close(os.open(database, flags, 0o600))  # an empty file is a new database
    for path in (database, f"{database}-wal", f"{database}-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(path).chmod(0o600)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Stop the sqlite3 module from issuing its own BEGIN; the "begin" hook below does it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """A writing transaction: ``BEGIN IMMEDIATE`` on SQLite (no lock upgrade can fail half-way
    with "database is locked"), a plain one elsewhere. Commits on success, rolls back on error."""
    with engine.connect() as conn:
        conn.execution_options(**{IMMEDIATE: True})
        with conn.begin():
            yield conn


def upsert(
    conn: Connection,
    table: Table,
    values: Mapping[str, Any],
    index_elements: Sequence[str],
    set_: Mapping[str, Any] | None = None,
) -> CursorResult[Any]:
    """Insert ``values`` as a row of ``table``; if a row with the same ``index_elements`` (the
    primary key or a unique constraint) exists, update it with ``set_`` instead, or with
    ``set_=None`` leave it and insert nothing (the result's ``rowcount`` is then 0).

    One ``INSERT … ON CONFLICT`` statement, in PostgreSQL's and SQLite's own dialects: the
    database decides atomically, so concurrent writers in other processes neither fail on the
    constraint nor need a retry. ``set_`` values may be expressions on the existing row
    (``{"value": table.c.value + 1}``).
    """
    name = conn.dialect.name
    if name == "postgresql":
        statement: postgresql.Insert | sqlite.Insert = postgresql.insert(table).values(values)
    elif name == "sqlite":
        statement = sqlite.insert(table).values(values)
    else:
        raise NotImplementedError(f"upsert supports PostgreSQL and SQLite, not {name}")
    if set_ is None:
        done = statement.on_conflict_do_nothing(index_elements=list(index_elements))
    else:
        done = statement.on_conflict_do_update(index_elements=list(index_elements), set_=set_)
    # SQLAlchemy keeps an INSERT's row count only when asked: 0 tells a skipped row.
    return conn.execute(done.execution_options(preserve_rowcount=True))
