"""Alembic owns the schema: a database of the release before migrations (7a4d5be), full of jobs,
results, users and keys, is upgraded by `hushscribe db upgrade` and by the server's own start
without losing a row; a fresh one gets head; PostgreSQL behind head is refused with the fix; the
revisions match the tables (a model change without a migration fails here); concurrent starts
upgrade once."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, MetaData, String, create_engine, text

from hushscribe import schema
from hushscribe.db import connect_engine, make_engine
from hushscribe.jobs.queue import JobQueue
from hushscribe.security.keys import KeyStore
from hushscribe.security.users import UserStore
from tests.legacy_db import (
    ALICE,
    ALICE_KEY,
    BOB,
    DONE_ID,
    JOBS,
    ROWS,
    TRANSCRIPT,
    ddl,
    dump,
    job,
    make_legacy,
    structure,
)
from tests.pg import PgServer
from tests.service import Service, service_data_dir

HEAD = "0002"
UPGRADE_HINT = "run `hushscribe db upgrade`"


def cli(
    data_dir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HUSHSCRIBE_")}
    return subprocess.run(
        [sys.executable, "-m", "hushscribe", "--data-dir", str(data_dir), *args],
        capture_output=True, text=True, timeout=120, env=clean | (env or {}),
        cwd=data_dir.parent,
    )  # fmt: skip


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@dataclass
class Who:
    user_id: str
    sees_all_jobs: bool = False


def test_previous_release_upgraded_by_cli_loses_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    db = make_legacy(data / "hushscribe.db")
    before = dump(db)
    assert {n: len(r) for n, r in before.items()} == {n: len(r) for n, r in ROWS.items()}

    behind = cli(data, "db", "current", "--check")
    assert behind.returncode == 1
    assert "previous release's schema" in behind.stdout and f"needs {HEAD}" in behind.stdout

    out = ok(cli(data, "db", "upgrade"))
    assert f"upgrading unversioned (the previous release's schema) → {HEAD}" in out
    assert "base → 0001" in out and "0001 → 0002" in out and "model_used" in out
    assert f"→ {HEAD} (head)" in out

    after = dump(db)
    assert after.keys() == before.keys()
    for table, rows in before.items():
        if table != "jobs":
            assert after[table] == rows, table
    assert [{k: v for k, v in r.items() if k != "model_used"} for r in after["jobs"]] == before[
        "jobs"
    ]
    assert [r["model_used"] for r in after["jobs"]] == [None] * len(JOBS)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]
    conn.close()

    assert ok(cli(data, "db", "current", "--check")) == f"{HEAD} (head)\n"
    history = ok(cli(data, "db", "history"))
    assert "base → 0001" in history and f"0001 → {HEAD} (head, current)" in history
    assert f"schema at {HEAD} (head): nothing to do" in ok(cli(data, "db", "upgrade"))

    # This release reads what the previous one wrote.
    engine = make_engine(f"sqlite:///{db}", upgrade=False)
    try:
        queue = JobQueue(engine)
        assert queue.result(DONE_ID, Who(ALICE)) == TRANSCRIPT
        record = queue.get(JOBS[0]["id"], Who(ALICE))
        assert (
            record is not None
            and record.filename == "réunion 会议.m4a"
            and record.model_used is None
        )
        assert record.options == {"task": "translate", "initial_prompt": "Zürich, 東京"}
        principal = KeyStore(engine).principal(ALICE_KEY)
        assert principal is not None and principal.user_id == ALICE
        bob = UserStore(engine).get(BOB)
        assert bob is not None and bob.disabled and bob.source == "ldap"
    finally:
        engine.dispose()


def test_revision_0001_is_the_previous_release_schema(tmp_path: Path) -> None:
    legacy = make_legacy(tmp_path / "legacy.db", rows={})
    engine = connect_engine(f"sqlite:///{tmp_path / 'r1.db'}")
    try:
        assert schema.upgrade(engine, "0001").after == "0001"
    finally:
        engine.dispose()
    assert ddl(tmp_path / "r1.db") == ddl(legacy)  # the same CREATE statements, word for word


def test_fresh_database_gets_head_as_the_tables_define_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    out = ok(cli(data, "db", "upgrade"))
    assert f"upgrading empty → {HEAD}" in out and "base → 0001" in out
    assert ok(cli(data, "db", "current")).strip().endswith(f"{HEAD} (head)")

    reference = create_engine(f"sqlite:///{tmp_path / 'create_all.db'}")
    schema.load_metadata().create_all(reference)
    reference.dispose()
    assert structure(data / "hushscribe.db") == structure(tmp_path / "create_all.db")

    engine = make_engine(f"sqlite:///{tmp_path / 'auto.db'}")  # a start on SQLite: upgrades
    try:
        assert schema.current(engine) == HEAD
    finally:
        engine.dispose()


def _diff(engine_url: str, metadata: MetaData) -> list[Any]:
    engine = make_engine(engine_url, upgrade=True)
    try:
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), metadata))
    finally:
        engine.dispose()


def test_head_matches_metadata(tmp_path: Path) -> None:
    """A table changed without a revision fails here: write one (see migrations/env.py)."""
    assert _diff(f"sqlite:///{tmp_path / 'a.db'}", schema.load_metadata()) == []
    changed = MetaData()
    for table in schema.load_metadata().sorted_tables:
        copy = table.to_metadata(changed)
        if table.name == "jobs":
            copy.append_column(Column("not_migrated", String(8)))
    found = _diff(f"sqlite:///{tmp_path / 'b.db'}", changed)
    assert [(d[0], d[3].name) for d in found] == [("add_column", "not_migrated")]


def test_downgrade_of_0002_keeps_rows_and_restores_the_previous_schema(tmp_path: Path) -> None:
    db = make_legacy(tmp_path / "hushscribe.db")
    engine = make_engine(f"sqlite:///{db}")
    try:
        assert schema.current(engine) == HEAD
        assert schema.downgrade(engine, "0001").after == "0001"
    finally:
        engine.dispose()
    assert dump(db) == ROWS  # results survived the copy of jobs: no cascade
    assert structure(db) == structure(make_legacy(tmp_path / "legacy.db", rows={}))
    with pytest.raises(schema.SchemaMismatch, match=r"is at 0001, this hushscribe needs 0002"):
        make_engine(f"sqlite:///{db}", upgrade=False)


def test_unknown_revision_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ok(cli(data, "db", "upgrade"))
    with sqlite3.connect(data / "hushscribe.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099'")
    conn.close()
    with pytest.raises(schema.SchemaMismatch, match="0099, which this hushscribe does not know"):
        make_engine(f"sqlite:///{data / 'hushscribe.db'}")
    done = cli(data, "db", "upgrade")
    assert done.returncode == 2 and "database_schema_mismatch" in done.stderr
    assert "a newer release has upgraded it" in done.stderr


GO = """
import sys, time
from pathlib import Path
from hushscribe.db import make_engine
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.005)
make_engine(sys.argv[1], upgrade=True).dispose()
print("ok")
"""


def upgrade_at_once(url: str, tmp_path: Path, processes: int = 4) -> None:
    """``processes`` processes that start upgrading ``url`` at the same moment: all succeed."""
    go = tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", GO, url, str(go)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]  # fmt: skip
    time.sleep(3)  # all imported and waiting
    go.touch()
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.strip() == "ok", err


def test_concurrent_starts_upgrade_sqlite_once(tmp_path: Path) -> None:
    db = make_legacy(tmp_path / "hushscribe.db")
    upgrade_at_once(f"sqlite:///{db}", tmp_path)
    assert [{k: v for k, v in r.items() if k != "model_used"} for r in dump(db)["jobs"]] == JOBS
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT * FROM alembic_version").fetchall() == [(HEAD,)]
    conn.close()


def test_server_start_upgrades_an_old_sqlite_file(
    tmp_path: Path, data_dir: Path, speech_dir: Path
) -> None:
    """`hushscribe serve` on the previous release's database: up, its key still signs in, its
    finished job's result is served, its queued job is transcribed."""
    root = service_data_dir(tmp_path / "svc", data_dir / "models")
    (root / "blobs").mkdir(mode=0o700)
    blob = root / "blobs" / "queued.flac"
    blob.write_bytes((speech_dir / "en_misc" / "jfk.flac").read_bytes())
    queued = job("9" * 32, "queued", blob_path=str(blob), blob_bytes=blob.stat().st_size,
                  blob_sha256=hashlib.sha256(blob.read_bytes()).hexdigest())  # fmt: skip
    done_job = JOBS[2] | {"result_expires_at": None}  # kept (the sweep purges expired ones)
    make_legacy(root / "hushscribe.db", ROWS | {"jobs": [done_job, JOBS[3], queued]})
    svc = Service(root).start()
    try:
        with httpx.Client(base_url=svc.url, timeout=60) as http:
            http.headers["Authorization"] = f"Bearer {ALICE_KEY}"
            done = http.get(f"/v1/jobs/{DONE_ID}/result", params={"format": "txt"})
            assert done.status_code == 200, done.text
            assert "ask not what your country" in done.text
            deadline = time.monotonic() + 300
            while (seen := http.get(f"/v1/jobs/{queued['id']}").json())["status"] != "done":
                assert seen["status"] in ("queued", "running") and time.monotonic() < deadline, seen
                time.sleep(0.5)
            text = http.get(f"/v1/jobs/{queued['id']}/result", params={"format": "txt"}).text
            assert "ask not what your country" in text.lower()
    finally:
        assert svc.stop() == 0
    assert dump(root / "hushscribe.db")["users"] == ROWS["users"]


# --- PostgreSQL: several nodes share it, so a start checks and an operator upgrades ---------


@pytest.fixture
def pg_db(pg_server: PgServer) -> Iterator[str]:
    url = pg_server.create_database("migrations")
    yield url
    pg_server.drop_database(url)


def _at_0001_with_a_job(url: str) -> None:
    engine = connect_engine(url)
    try:
        schema.upgrade(engine, "0001")
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO users VALUES (:id, 'alice', NULL, 'local', 'user', "
                              "false, 1, 1, NULL)"), {"id": ALICE})  # fmt: skip
            row, names = dict(JOBS[0]), ", ".join(JOBS[0])
            conn.execute(text(f"INSERT INTO jobs ({names}) VALUES (:{', :'.join(row)})"), row)
    finally:
        engine.dispose()


def test_postgres_behind_is_refused_until_upgraded(pg_db: str, tmp_path: Path) -> None:
    with pytest.raises(
        schema.SchemaMismatch, match=r"database is empty \(no tables\), this hushscribe needs"
    ):
        make_engine(pg_db)
    _at_0001_with_a_job(pg_db)
    message = f"database schema is at 0001, this hushscribe needs {HEAD}: {UPGRADE_HINT}"
    with pytest.raises(schema.SchemaMismatch) as refused:
        make_engine(pg_db)
    assert refused.value.message == message and refused.value.code == "database_schema_mismatch"

    env = {"HUSHSCRIBE_DATABASE_URL": pg_db}
    data = tmp_path / "data"
    data.mkdir()
    serve = subprocess.run(
        [sys.executable, "-m", "hushscribe", "serve", "--port", "0"], capture_output=True,
        text=True, timeout=120, cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("HUSHSCRIBE_")}
        | env | {"HUSHSCRIBE_DATA_DIR": str(data)},
    )  # fmt: skip
    assert serve.returncode == 2, serve.stdout + serve.stderr
    assert message in " ".join(serve.stderr.split()), serve.stderr

    upgraded = cli(data, "db", "upgrade", env=env)
    assert f"upgrading 0001 → {HEAD}" in ok(upgraded)
    assert "127.0.0.1" in upgraded.stderr and "***" in upgraded.stderr  # the password is not
    assert pg_db.split(":")[2].split("@")[0] not in upgraded.stdout + upgraded.stderr
    engine = make_engine(pg_db)  # checks, and passes
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, filename, model_used FROM jobs")).all()
        assert [tuple(r) for r in rows] == [(JOBS[0]["id"], "réunion 会议.m4a", None)]
        with engine.connect() as conn:
            found = compare_metadata(MigrationContext.configure(conn), schema.load_metadata())
        assert list(found) == []
    finally:
        engine.dispose()


def test_postgres_previous_release_adopted_and_concurrent_upgrades(
    pg_db: str, tmp_path: Path
) -> None:
    _at_0001_with_a_job(pg_db)
    engine = connect_engine(pg_db)
    with engine.begin() as conn:  # what the previous release left: tables, no version
        conn.execute(text("DROP TABLE alembic_version"))
    try:
        with pytest.raises(schema.SchemaMismatch, match="previous release's"):
            schema.check(engine)
        upgrade_at_once(pg_db, tmp_path, processes=3)
        assert schema.current(engine) == HEAD
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM jobs")).scalar() == 1
    finally:
        engine.dispose()
