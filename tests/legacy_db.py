"""The release before migrations (commit 7a4d5be), frozen: its exact schema, a database of it
with rows in every table and every job state, and ways to compare databases (rows, structure,
DDL) read by SQLite itself, not through the code under test."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

# `sqlite3 .schema` of a database made by commit 7a4d5be (the release before migrations): its
# make_engine (metadata.create_all), then Stats() and WorkerRegistry() as the server made them.
LEGACY_DDL = """
CREATE TABLE jobs (
	id VARCHAR(32) NOT NULL, owner VARCHAR(255) NOT NULL, task VARCHAR(16) NOT NULL,
	model VARCHAR(255) NOT NULL, options JSON NOT NULL, status VARCHAR(16) NOT NULL,
	priority INTEGER NOT NULL, attempts INTEGER NOT NULL, max_attempts INTEGER NOT NULL,
	lease_owner VARCHAR(255), lease_expires_at FLOAT, progress FLOAT NOT NULL,
	audio_seconds FLOAT, blob_path TEXT NOT NULL, blob_sha256 VARCHAR(64) NOT NULL,
	blob_bytes BIGINT NOT NULL, filename VARCHAR(255), error_code VARCHAR(64), error_message TEXT,
	created_at FLOAT NOT NULL, started_at FLOAT, finished_at FLOAT, updated_at FLOAT NOT NULL,
	result_expires_at FLOAT, PRIMARY KEY (id),
	CONSTRAINT ck_jobs_status
		CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
	CONSTRAINT ck_jobs_task CHECK (task IN ('transcribe', 'translate')),
	CONSTRAINT ck_jobs_progress CHECK (progress >= 0 AND progress <= 1),
	CONSTRAINT ck_jobs_attempts CHECK (attempts >= 0 AND max_attempts >= 1));
CREATE INDEX ix_jobs_claim ON jobs (status, priority DESC, created_at);
CREATE INDEX ix_jobs_lease ON jobs (status, lease_expires_at);
CREATE INDEX ix_jobs_owner_created ON jobs (owner, created_at);
CREATE INDEX ix_jobs_result_expires ON jobs (result_expires_at);
CREATE TABLE results (
	job_id VARCHAR(32) NOT NULL, transcript TEXT NOT NULL, created_at FLOAT NOT NULL,
	PRIMARY KEY (job_id), FOREIGN KEY(job_id) REFERENCES jobs (id) ON DELETE CASCADE);
CREATE TABLE users (
	id VARCHAR(32) NOT NULL, username VARCHAR(128) NOT NULL, password_hash TEXT,
	source VARCHAR(8) NOT NULL, role VARCHAR(16) NOT NULL, disabled BOOLEAN NOT NULL,
	created_at FLOAT NOT NULL, updated_at FLOAT NOT NULL, last_login_at FLOAT, PRIMARY KEY (id),
	CONSTRAINT ck_users_role CHECK (role IN ('admin', 'user', 'auditor')),
	CONSTRAINT ck_users_source CHECK (source IN ('local', 'ldap')), UNIQUE (username));
CREATE TABLE api_keys (
	id VARCHAR(32) NOT NULL, user_id VARCHAR(32) NOT NULL, name VARCHAR(128) NOT NULL,
	key_hash VARCHAR(64) NOT NULL, prefix VARCHAR(16) NOT NULL, scopes JSON NOT NULL,
	created_at FLOAT NOT NULL, expires_at FLOAT, last_used_at FLOAT, revoked_at FLOAT,
	PRIMARY KEY (id), FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE,
	UNIQUE (key_hash));
CREATE INDEX ix_api_keys_user ON api_keys (user_id);
CREATE TABLE sessions (
	id_hash VARCHAR(64) NOT NULL, user_id VARCHAR(32) NOT NULL, method VARCHAR(16) NOT NULL,
	created_at FLOAT NOT NULL, last_seen_at FLOAT NOT NULL, expires_at FLOAT NOT NULL,
	PRIMARY KEY (id_hash), FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE);
CREATE INDEX ix_sessions_user ON sessions (user_id);
CREATE INDEX ix_sessions_expires ON sessions (expires_at);
CREATE TABLE stats ("key" VARCHAR(128) NOT NULL, value FLOAT NOT NULL, PRIMARY KEY ("key"));
CREATE TABLE workers (
	id VARCHAR(255) NOT NULL, host VARCHAR(255) NOT NULL, pid INTEGER NOT NULL,
	started_at FLOAT NOT NULL, last_seen FLOAT NOT NULL, models JSON NOT NULL, PRIMARY KEY (id));
"""

ALICE, BOB, AUDITOR = "a1" * 16, "b2" * 16, "c3" * 16
ALICE_KEY = "hs_" + "legacyKeyOfAlice0123456789abcdefghijklmnopqrstu"
T0 = 1_780_000_000.0
TRANSCRIPT = json.dumps(  # a result as that release stored it (no fallbacks in ModelRef yet)
    {"task": "transcribe", "language": "en", "language_probability": 0.98, "duration": 11.0,
     "segments": [{"id": 0, "start": 0.0, "end": 11.0, "text": " ask not what your country can "
                   "do for you", "words": None, "avg_logprob": -0.2, "no_speech_prob": 0.01,
                   "compression_ratio": 1.2, "temperature": 0.0, "tokens": [50364, 1029]}],
     "model": {"name": "base", "sha256": "905e5bf8" * 8}, "options": {"beam_size": 5}}
)  # fmt: skip


def job(id_: str, status: str, **over: Any) -> dict[str, Any]:
    row = {
        "id": id_, "owner": ALICE, "task": "transcribe", "model": "base",
        "options": json.dumps({"task": "transcribe", "language": "en"}), "status": status,
        "priority": 0, "attempts": 0, "max_attempts": 3, "lease_owner": None,
        "lease_expires_at": None, "progress": 0.0, "audio_seconds": None,
        "blob_path": f"/var/lib/hushscribe/blobs/{id_}.flac", "blob_sha256": "ab" * 32,
        "blob_bytes": 181_124, "filename": "jfk.flac", "error_code": None,
        "error_message": None, "created_at": T0, "started_at": None, "finished_at": None,
        "updated_at": T0, "result_expires_at": None,
    }  # fmt: skip
    return row | over


JOBS = [
    job("0" * 31 + "1", "queued", priority=5, task="translate", filename="réunion 会议.m4a",
         options=json.dumps({"task": "translate", "initial_prompt": "Zürich, 東京"})),
    job("0" * 31 + "2", "running", attempts=1, lease_owner="node-1:4242:0",
         lease_expires_at=T0 + 30, started_at=T0 + 1, progress=0.4, audio_seconds=11.0),
    job("0" * 31 + "3", "done", attempts=1, progress=1.0, audio_seconds=11.0, started_at=T0,
         finished_at=T0 + 4, result_expires_at=T0 + 86400, blob_bytes=5 * 2**30),
    job("0" * 31 + "4", "failed", attempts=3, error_code="decode_failed",
         error_message="le fichier est illisible ✗", finished_at=T0 + 2, owner=BOB),
    job("0" * 31 + "5", "cancelled", finished_at=T0 + 3, filename=None),
]  # fmt: skip
DONE_ID = JOBS[2]["id"]
ROWS: dict[str, list[dict[str, Any]]] = {
    "jobs": JOBS,
    "results": [{"job_id": DONE_ID, "transcript": TRANSCRIPT, "created_at": T0 + 4}],
    "users": [
        {"id": ALICE, "username": "alice", "password_hash": "$argon2id$v=19$m=65536,t=3,p=4$x$y",
         "source": "local", "role": "user", "disabled": 0, "created_at": T0,
         "updated_at": T0, "last_login_at": T0 + 9},
        {"id": BOB, "username": "bob", "password_hash": None, "source": "ldap", "role": "admin",
         "disabled": 1, "created_at": T0, "updated_at": T0 + 1, "last_login_at": None},
        {"id": AUDITOR, "username": "carol", "password_hash": None, "source": "ldap",
         "role": "auditor", "disabled": 0, "created_at": T0, "updated_at": T0,
         "last_login_at": None},
    ],
    "api_keys": [
        {"id": "key_00000000000000a1", "user_id": ALICE, "name": "laptop",
         "key_hash": hashlib.sha256(ALICE_KEY.encode()).hexdigest(), "prefix": ALICE_KEY[:9],
         "scopes": '["transcribe", "jobs:read"]', "created_at": T0, "expires_at": None,
         "last_used_at": T0 + 5, "revoked_at": None},
        {"id": "key_00000000000000b2", "user_id": BOB, "name": "old ci", "key_hash": "e" * 64,
         "prefix": "hs_eeeeee", "scopes": '["transcribe"]', "created_at": T0,
         "expires_at": T0 + 60, "last_used_at": None, "revoked_at": T0 + 30},
    ],
    "sessions": [
        {"id_hash": "f" * 64, "user_id": ALICE, "method": "local", "created_at": T0,
         "last_seen_at": T0 + 9, "expires_at": T0 + 43200},
    ],
    "stats": [{"key": "audio_seconds_total", "value": 11.0},
              {"key": "processing_seconds_bucket:+Inf", "value": 1.0}],
    "workers": [{"id": "node-1:4242:0", "host": "node-1", "pid": 4242, "started_at": T0,
                 "last_seen": T0 + 9, "models": '["base"]'}],
}  # fmt: skip


def make_legacy(path: Path, rows: dict[str, list[dict[str, Any]]] = ROWS) -> Path:
    """A database as the previous release left it: its exact schema, rows in every table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.executescript(LEGACY_DDL)
        for table, table_rows in rows.items():
            for row in table_rows:
                names = ", ".join(f'"{k}"' for k in row)
                marks = ", ".join("?" * len(row))
                conn.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", list(row.values()))
    conn.close()
    return path


def dump(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table (but Alembic's), read by SQLite itself."""
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        out = {
            n: [dict(r) for r in conn.execute(f'SELECT * FROM "{n}" ORDER BY 1')]
            for n in names
            if n != "alembic_version"
        }
    conn.close()
    return out


def _checks(sql: str) -> list[str]:
    """The ``CHECK (…)`` clauses of a CREATE TABLE statement, whitespace aside."""
    found, at = [], sql.find("CHECK (")
    while at >= 0:
        depth, end = 0, at + len("CHECK ")
        while True:
            depth += {"(": 1, ")": -1}.get(sql[end], 0)
            if depth == 0:
                break
            end += 1
        found.append(re.sub(r"\s+", "", sql[at : end + 1]))
        at = sql.find("CHECK (", end)
    return sorted(found)


def structure(path: Path) -> dict[str, Any]:
    """What a table is, whatever the text of its CREATE statement: columns (order, type, null,
    default, key), indexes (columns, order, uniqueness), foreign keys, check constraints."""
    with sqlite3.connect(path) as conn:
        tables = conn.execute("SELECT name, sql FROM sqlite_master WHERE type='table'").fetchall()
        out: dict[str, Any] = {}
        for name, sql in tables:
            if name == "alembic_version":
                continue
            indexes = [
                (i[1], i[2], i[3], [(x[2], x[3]) for x in conn.execute(
                    f"PRAGMA index_xinfo('{i[1]}')") if x[5]])
                for i in conn.execute(f"PRAGMA index_list('{name}')")
            ]  # fmt: skip
            out[name] = {
                "columns": conn.execute(f"PRAGMA table_xinfo('{name}')").fetchall(),
                "indexes": sorted(indexes),
                "foreign_keys": conn.execute(f"PRAGMA foreign_key_list('{name}')").fetchall(),
                "checks": _checks(sql),
            }
    conn.close()
    return out


def ddl(path: Path) -> set[tuple[str, str, str]]:
    """Every CREATE statement SQLite keeps, whitespace aside."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL")
        out = {(t, n, re.sub(r"\s+", "", s)) for t, n, s in rows if n != "alembic_version"}
    conn.close()
    return out
