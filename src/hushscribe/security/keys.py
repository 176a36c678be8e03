"""API keys in the database: ``hs_`` + 256 random bits, shown once, stored as a SHA-256 digest.

A key is looked up on every request (one indexed read): revoking it, its expiry, or disabling its
owner takes effect at the next request on every process and node. Its scopes are cut to what the
owner's role grants at that moment.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Engine, insert, select, update

from hushscribe.db import writing
from hushscribe.errors import InvalidRequest, KeyNotFound
from hushscribe.security.passwords import digest, new_secret
from hushscribe.security.principal import Principal, parse_scopes, role_scopes
from hushscribe.security.tables import LABEL_MAX, api_keys, users
from hushscribe.settings import Scope

KEY_PREFIX: Final = "hs_"
LAST_USED_EVERY_S: Final = 60.0
"""A key's last-used time is written at most once a minute, not on every request."""
_DURATION = re.compile(r"^(\d{1,5})\s*([dhm])$")
_UNITS: Final = {"d": 86400, "h": 3600, "m": 60}


def parse_duration(text: str) -> float:
    """``90d``, ``12h``, ``30m`` → seconds."""
    found = _DURATION.fullmatch(text.strip().lower())
    if not found or int(found.group(1)) == 0:
        raise InvalidRequest(f"invalid duration {text[:32]!r}: write e.g. 90d, 12h or 30m")
    return int(found.group(1)) * _UNITS[found.group(2)]


@dataclass(frozen=True)
class KeyRecord:
    id: str
    user_id: str
    username: str
    name: str
    prefix: str
    scopes: list[Scope]
    created_at: float
    expires_at: float | None
    last_used_at: float | None
    revoked_at: float | None

    def view(self) -> dict[str, Any]:
        now = time.time()
        state = (
            "revoked"
            if self.revoked_at
            else "expired"
            if self.expires_at is not None and self.expires_at <= now
            else "active"
        )
        return {
            "id": self.id,
            "object": "api_key",
            "name": self.name,
            "user": self.username,
            "prefix": self.prefix,
            "scopes": self.scopes,
            "state": state,
            "created_at": int(self.created_at),
            "expires_at": int(self.expires_at) if self.expires_at else None,
            "last_used_at": int(self.last_used_at) if self.last_used_at else None,
        }


_COLUMNS = (api_keys, users.c.username)


def _record(row: Any) -> KeyRecord:
    return KeyRecord(
        id=row.id,
        user_id=row.user_id,
        username=row.username,
        name=row.name,
        prefix=row.prefix,
        scopes=list(row.scopes),
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


class KeyStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(
        self,
        user_id: str,
        role: str,
        name: str,
        scopes: list[str] | None = None,
        expires_in_s: float | None = None,
    ) -> tuple[str, KeyRecord]:
        """A new key for the user; returns ``(key, record)``. The key exists only in the answer."""
        label = name.strip()
        if not label or len(label) > LABEL_MAX or any(ord(c) < 32 for c in label):
            raise InvalidRequest(f"a key's name has 1 to {LABEL_MAX} printable characters")
        allowed = role_scopes(role)
        try:
            wanted = parse_scopes(scopes) if scopes else sorted(allowed)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        beyond = [s for s in wanted if s not in allowed]
        if beyond:
            raise InvalidRequest(f"the role {role!r} cannot hold scope {beyond[0]!r}")
        key = new_secret(KEY_PREFIX)
        now = time.time()
        key_id = "key_" + secrets.token_hex(8)
        row = {
            "id": key_id,
            "user_id": user_id,
            "name": label,
            "key_hash": digest(key),
            "prefix": key[: len(KEY_PREFIX) + 6],
            "scopes": wanted,
            "created_at": now,
            "expires_at": now + expires_in_s if expires_in_s else None,
            "last_used_at": None,
            "revoked_at": None,
        }
        with writing(self.engine) as conn:
            conn.execute(insert(api_keys).values(**row))
        record = self.get(key_id)
        assert record is not None
        return key, record

    def get(self, key_id: str, user_id: str | None = None) -> KeyRecord | None:
        """A key by id; with ``user_id`` only that user's (others' keys do not exist for them)."""
        query = select(*_COLUMNS).join(users, users.c.id == api_keys.c.user_id)
        query = query.where(api_keys.c.id == key_id)
        if user_id is not None:
            query = query.where(api_keys.c.user_id == user_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return _record(row) if row else None

    def list(self, user_id: str | None) -> list[KeyRecord]:
        """Keys of ``user_id`` (``None``: everyone's, for admins), newest first."""
        query = select(*_COLUMNS).join(users, users.c.id == api_keys.c.user_id)
        if user_id is not None:
            query = query.where(api_keys.c.user_id == user_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(api_keys.c.created_at.desc())).all()
        return [_record(r) for r in rows]

    def revoke(self, key_id: str, user_id: str | None) -> KeyRecord:
        """Revoke a key of ``user_id`` (``None``: any user's, for admins)."""
        found = self.get(key_id, user_id)
        if found is None:
            raise KeyNotFound(f"no API key {key_id[:40]!r}")
        if found.revoked_at is None:
            with writing(self.engine) as conn:
                conn.execute(
                    update(api_keys)
                    .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                    .values(revoked_at=time.time())
                )
        revoked = self.get(key_id)
        assert revoked is not None
        return revoked

    def principal(self, key: str) -> Principal | None:
        """The principal of a live key of an enabled user, else None."""
        if not key.startswith(KEY_PREFIX) or len(key) > 128:
            return None
        query = (
            select(api_keys, users.c.username, users.c.role, users.c.disabled)
            .join(users, users.c.id == api_keys.c.user_id)
            .where(api_keys.c.key_hash == digest(key))
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        now = time.time()
        if row is None or row.disabled or row.revoked_at is not None:
            return None
        if row.expires_at is not None and row.expires_at <= now:
            return None
        if row.last_used_at is None or now - row.last_used_at > LAST_USED_EVERY_S:
            with writing(self.engine) as conn:
                conn.execute(
                    update(api_keys).where(api_keys.c.id == row.id).values(last_used_at=now)
                )
        scopes = frozenset(s for s in row.scopes if s in role_scopes(row.role))
        return Principal(
            user_id=row.user_id,
            username=row.username,
            role=row.role,
            scopes=scopes,
            method="key",
            key_id=row.id,
        )
