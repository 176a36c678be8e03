"""The database schema's version, owned by Alembic (revisions in ``hushscribe/migrations``).

:func:`upgrade` brings a database to the revision this hushscribe needs (head); :func:`check`
refuses one that is elsewhere, with the command that fixes it. ``make_engine`` does one or the
other at every start: upgrade on SQLite (one host, the server owns its file), only check on
PostgreSQL (several nodes: an operator runs ``hushscribe db upgrade`` once, before rolling out).

An upgrade is one transaction, whoever else starts at the same moment: ``BEGIN IMMEDIATE`` on
SQLite (the API and its workers wait on the file's write lock, then find it done), a transaction
advisory lock on PostgreSQL. A database holding tables but no ``alembic_version`` was made by the
release before migrations; revision 0001 adopts it as it is (see its docstring).
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext, MigrationInfo
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, MetaData, inspect

from hushscribe.db import IMMEDIATE, connect_engine, metadata
from hushscribe.errors import HushscribeError

SCRIPT_LOCATION: Final = "hushscribe:migrations"
VERSION_TABLE: Final = "alembic_version"
UPGRADE_COMMAND: Final = "hushscribe db upgrade"
# pg_advisory_xact_lock key of schema changes: any fixed 64-bit number no other lock uses.
PG_LOCK_KEY: Final = 0x6873_6462_7363_6865  # "hsdbsche"


class SchemaMismatch(HushscribeError):
    """The database's schema is not the one this hushscribe needs."""

    code = "database_schema_mismatch"
    status = 503
    type = "server_error"

    def __init__(self, current: str | None, needed: str, message: str) -> None:
        super().__init__(message)
        self.current = current
        self.needed = needed


class MigrationFailed(HushscribeError):
    """A schema upgrade or downgrade could not be carried out; the database is left as it was."""

    code = "database_migration_failed"
    status = 500
    type = "server_error"


@dataclass(frozen=True)
class Step:
    """One revision applied: ``source`` → ``target``, and what it changes (its docstring's line)."""

    source: str | None
    target: str | None
    doc: str


@dataclass(frozen=True)
class Migration:
    """What :func:`upgrade` did: from ``before`` (None: no version) to ``after``."""

    before: str | None
    after: str | None
    adopted: bool = False
    """The database had tables but no version: the release before migrations made it."""
    steps: list[Step] = field(default_factory=list)


@dataclass(frozen=True)
class Revision:
    id: str
    down: str | None
    doc: str


def load_metadata() -> MetaData:
    """The metadata with every table of the application registered on it."""
    import hushscribe.jobs.registry
    import hushscribe.jobs.stats
    import hushscribe.jobs.tables
    import hushscribe.security.tables  # noqa: F401  (their tables register on ``metadata``)

    return metadata


def alembic_config(connection: Connection | None = None, **attributes: Any) -> Config:
    """Alembic's configuration, built here (no ``alembic.ini``): the revisions in the package."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.set_main_option("file_template", "v%%(rev)s_%%(slug)s")
    config.attributes.update(attributes, connection=connection)
    return config


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    """The revision this hushscribe needs."""
    revision = _scripts().get_current_head()
    if revision is None:  # only a package without its versions/ could get here
        raise MigrationFailed("no schema revisions found in hushscribe/migrations/versions")
    return revision


def history() -> list[Revision]:
    """Every revision, oldest first."""
    revisions = reversed(list(_scripts().walk_revisions()))
    return [Revision(r.revision, _one(r.down_revision), _first_line(r.doc)) for r in revisions]


def current(engine: Engine) -> str | None:
    """The database's revision; None when it has none (empty, or made before migrations)."""
    with engine.connect() as conn:
        return _current(conn)


def has_tables(engine: Engine) -> bool:
    """Whether the database holds any table besides Alembic's own."""
    with engine.connect() as conn:
        return _has_tables(conn)


def check(engine: Engine) -> None:
    """Raise :class:`SchemaMismatch` unless the database is at :func:`head`."""
    with engine.connect() as conn:
        revision = _current(conn)
        if revision == head():
            return
        legacy = revision is None and _has_tables(conn)
    raise _mismatch(revision, legacy)


def upgrade(
    engine: Engine, revision: str = "head", *, on_step: Callable[[Step], None] | None = None
) -> Migration:
    """Bring the database to ``revision`` (:func:`head`: what this hushscribe needs) in one
    transaction; a no-op when it is there. ``on_step`` hears of each revision applied."""
    needed = head() if revision == "head" else revision
    before = current(engine)
    if before == needed:  # the common start: one read, no write lock taken
        return Migration(before, before)
    steps: list[Step] = []
    docs = {r.id: r.doc for r in history()}

    def applied(*, step: MigrationInfo, **_: Any) -> None:  # Alembic passes keywords
        target = _one(step.destination_revision_ids)
        steps.append(Step(_one(step.source_revision_ids), target, docs.get(target or "", "")))
        if on_step is not None:
            on_step(steps[-1])

    with _migrating(engine) as conn:
        before = _current(conn)  # again, under the lock: another process may have done it
        adopted = before is None and _has_tables(conn)
        if before is not None and before not in _known():
            raise _mismatch(before, legacy=False)
        _run(command.upgrade, conn, needed, on_version_apply=applied)
        after = _current(conn)
    return Migration(before, after, adopted, steps)


def downgrade(engine: Engine, revision: str) -> Migration:
    """Take the database back to ``revision`` (``"base"``: nothing). For tests and rollbacks."""
    with _migrating(engine) as conn:
        before = _current(conn)
        _run(command.downgrade, conn, revision)
        after = _current(conn)
    return Migration(before, after)


def new_revision(message: str) -> Path:
    """Write ``versions/v<next>_<slug>.py`` with the operations that bring head to the live
    tables (Alembic's autogenerate, against a scratch SQLite database). For developers: read and
    edit what it wrote before committing it."""
    with tempfile.TemporaryDirectory() as scratch:
        engine = connect_engine(f"sqlite:///{Path(scratch) / 'head.db'}")
        try:
            upgrade(engine)
            with engine.begin() as conn:
                script = command.revision(
                    alembic_config(conn),
                    message,
                    autogenerate=True,
                    rev_id=f"{int(head()) + 1:04d}",
                )
        finally:
            engine.dispose()
    _scripts.cache_clear()
    if script is None or isinstance(script, list):
        raise MigrationFailed("Alembic wrote no single revision")
    return Path(script.path)


@contextmanager
def _migrating(engine: Engine) -> Iterator[Connection]:
    """A connection in the one transaction a schema change runs in, serialised against every
    other process doing the same. On SQLite, foreign keys are off meanwhile (SQLite's own recipe
    for changing a table: a copied table's ``DROP TABLE`` would otherwise cascade-delete every
    row that references it) and checked before the commit."""
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        if sqlite:  # a PRAGMA that only works outside a transaction: on the driver's connection
            _pragma(conn, "foreign_keys = OFF")
            conn.execution_options(**{IMMEDIATE: True})
        try:
            with conn.begin():
                if engine.dialect.name == "postgresql":
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_LOCK_KEY})")
                yield conn
                if sqlite and (broken := conn.exec_driver_sql("PRAGMA foreign_key_check").all()):
                    raise MigrationFailed(
                        f"the schema change would break {len(broken)} references between "
                        f"rows (first: {tuple(broken[0])}); nothing was changed"
                    )
        finally:
            if sqlite and not conn.closed and not conn.invalidated:
                _pragma(conn, "foreign_keys = ON")


def _pragma(conn: Connection, pragma: str) -> None:
    """Run ``PRAGMA pragma`` on the driver's connection: outside any transaction, which SQLite
    needs for some (``foreign_keys`` does nothing inside one)."""
    driver = conn.connection.driver_connection
    if driver is None:  # only a connection already closed or invalidated has none
        raise MigrationFailed("the database connection was lost during a schema change")
    driver.execute(f"PRAGMA {pragma}")


def _run(fn: Callable[..., None], conn: Connection, revision: str, **attributes: Any) -> None:
    try:
        fn(alembic_config(conn, **attributes), revision)
    except CommandError as exc:
        raise MigrationFailed(f"schema migration to {revision} failed: {exc}") from exc


def _current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _has_tables(conn: Connection) -> bool:
    return any(name != VERSION_TABLE for name in inspect(conn).get_table_names())


def _known() -> set[str]:
    return {r.id for r in history()}


def _mismatch(revision: str | None, legacy: bool) -> SchemaMismatch:
    needed = head()
    if revision is not None and revision not in _known():
        return SchemaMismatch(
            revision,
            needed,
            f"database schema is at {revision}, which this hushscribe does not know (it needs "
            f"{needed}): a newer release has upgraded it; run that release",
        )
    if revision is not None:
        found = f"database schema is at {revision}"
    elif legacy:
        found = "database schema is the previous release's (no version recorded)"
    else:
        found = "database is empty (no tables)"
    message = f"{found}, this hushscribe needs {needed}: run `{UPGRADE_COMMAND}`"
    return SchemaMismatch(revision, needed, message)


def _one(revisions: str | tuple[str, ...] | list[str] | None) -> str | None:
    if revisions is None or isinstance(revisions, str):
        return revisions
    return ", ".join(revisions) or None


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if (doc or "").strip() else ""
