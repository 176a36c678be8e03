"""Identity tables: users, API keys, browser sessions. Portable types only (SQLite and PostgreSQL).

No secret is stored as given: passwords as argon2id hashes, API keys and session ids as SHA-256
digests (they are 256 random bits, so a fast hash loses nothing and costs nothing per request).
Times are float seconds since the epoch, as in the job tables.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    String,
    Table,
    Text,
)

from hushscribe.db import metadata

ROLES: Final = ("admin", "user", "auditor")
SOURCES: Final = ("local", "ldap")
USERNAME_MAX: Final = 128
LABEL_MAX: Final = 128

users = Table(
    "users",
    metadata,
    Column("id", String(32), primary_key=True),  # 128 random bits, hex; jobs.owner holds it
    Column("username", String(USERNAME_MAX), nullable=False, unique=True),  # lower case
    Column("password_hash", Text, nullable=True),  # argon2id; NULL for directory users
    Column("source", String(8), nullable=False),
    Column("role", String(16), nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("last_login_at", Float, nullable=True),
    CheckConstraint("role IN ('admin', 'user', 'auditor')", name="ck_users_role"),
    CheckConstraint("source IN ('local', 'ldap')", name="ck_users_source"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),  # public id, shown in lists and audit records
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(LABEL_MAX), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),  # SHA-256 hex of the key
    Column("prefix", String(16), nullable=False),  # the key's first characters, to recognise it
    Column("scopes", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=True),
    Column("last_used_at", Float, nullable=True),
    Column("revoked_at", Float, nullable=True),
)
Index("ix_api_keys_user", api_keys.c.user_id)

sessions = Table(
    "sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),  # SHA-256 hex of the cookie's value
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("method", String(16), nullable=False),  # how the user signed in: local or ldap
    Column("created_at", Float, nullable=False),
    Column("last_seen_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),  # absolute end; idle end is last_seen + idle
)
Index("ix_sessions_user", sessions.c.user_id)
Index("ix_sessions_expires", sessions.c.expires_at)
