"""Users and their browser sessions, in the database (SQLite or PostgreSQL).

Every call is a short transaction; nothing is cached in the process, so a user disabled or a
session ended on one node is refused by every node at its next request.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Engine, delete, func, insert, or_, select, update

from hushscribe.db import upsert, writing
from hushscribe.errors import InvalidRequest, UserExists, UserNotFound
from hushscribe.security.passwords import (
    configure,
    digest,
    hash_password,
    new_secret,
    password_weakness,
)
from hushscribe.security.principal import Principal, role_scopes
from hushscribe.security.tables import ROLES, USERNAME_MAX, sessions, users
from hushscribe.settings import AuthSettings, Role

USERNAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,127}$")
SESSION_TOUCH_S: Final = 15.0
"""A session's last-seen time is written at most this often (not on every request), and at
least four times per idle timeout, so a session in use never ends for being idle."""


@dataclass(frozen=True)
class User:
    id: str
    username: str
    role: Role
    source: str
    disabled: bool
    created_at: float
    last_login_at: float | None

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "user",
            "username": self.username,
            "role": self.role,
            "source": self.source,
            "disabled": self.disabled,
            "created_at": int(self.created_at),
            "last_login_at": int(self.last_login_at) if self.last_login_at else None,
        }


def normal_username(name: str) -> str:
    """The stored form of a user name (lower case), or InvalidRequest saying what is wrong."""
    value = name.strip().lower()
    if not USERNAME_RE.fullmatch(value):
        raise InvalidRequest(
            f"invalid user name: use 1 to {USERNAME_MAX} letters, digits and . _ @ - "
            "(starting with a letter or digit)"
        )
    return value


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise InvalidRequest(f"invalid role {role[:32]!r}: choose from {', '.join(ROLES)}")
    return role  # type: ignore[return-value]


def check_password(password: str) -> str:
    why = password_weakness(password)
    if why:
        raise InvalidRequest(why)
    return password


def _user(row: Mapping[Any, Any]) -> User:
    return User(
        id=row["id"],
        username=row["username"],
        role=row["role"],
        source=row["source"],
        disabled=bool(row["disabled"]),
        created_at=row["created_at"],
        last_login_at=row["last_login_at"],
    )


class UserStore:
    def __init__(self, engine: Engine, auth: AuthSettings | None = None) -> None:
        self.engine = engine
        if auth is not None:  # the costs of new hashes (and of the dummy one)
            configure(auth.argon2_time_cost, auth.argon2_memory_kib, auth.argon2_parallelism)

    # --- users -----------------------------------------------------------------------------

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(users)).scalar_one())

    def add(self, username: str, password: str | None, role: str, source: str = "local") -> User:
        name = normal_username(username)
        role = check_role(role)
        hashed = hash_password(check_password(password)) if password is not None else None
        now = time.time()
        row = {
            "id": secrets.token_hex(16),
            "username": name,
            "password_hash": hashed,
            "source": source,
            "role": role,
            "disabled": False,
            "created_at": now,
            "updated_at": now,
            "last_login_at": None,
        }
        with writing(self.engine) as conn:  # one statement: two adds at once, one user
            if not upsert(conn, users, row, ["username"]).rowcount:
                raise UserExists(f"a user named {name!r} exists")
        return _user(row)

    def remove(self, user_id: str) -> None:
        """Delete a user record (their keys and sessions go with it); for undoing an addition."""
        with writing(self.engine) as conn:
            conn.execute(delete(users).where(users.c.id == user_id))

    def get(self, user_id: str) -> User | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.id == user_id)).first()
        return _user(row._mapping) if row else None

    def by_name(self, username: str) -> tuple[User, str | None] | None:
        """The user and their password hash (None for directory users), if the name exists."""
        name = username.strip().lower()
        if len(name) > USERNAME_MAX:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.username == name)).first()
        return (_user(row._mapping), row.password_hash) if row else None

    def named(self, username: str) -> User:
        found = self.by_name(username)
        if found is None:
            raise UserNotFound(f"no user named {username.strip().lower()[:USERNAME_MAX]!r}")
        return found[0]

    def list(self) -> list[User]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(users).order_by(users.c.username)).all()
        return [_user(r._mapping) for r in rows]

    def _change(self, user_id: str, **values: Any) -> User:
        with writing(self.engine) as conn:
            done = conn.execute(
                update(users).where(users.c.id == user_id).values(updated_at=time.time(), **values)
            )
            if done.rowcount == 0:
                raise UserNotFound("no such user")
            if values.get("disabled") or "password_hash" in values:
                # A disabled user, or one whose password changed, is signed out everywhere.
                conn.execute(delete(sessions).where(sessions.c.user_id == user_id))
        found = self.get(user_id)
        assert found is not None
        return found

    def set_disabled(self, user_id: str, disabled: bool) -> User:
        return self._change(user_id, disabled=disabled)

    def set_role(self, user_id: str, role: str) -> User:
        return self._change(user_id, role=check_role(role))

    def set_password(self, user_id: str, password: str) -> User:
        user = self.get(user_id)
        if user is not None and user.source != "local":
            raise InvalidRequest(f"{user.username!r} signs in through the directory (LDAP)")
        return self._change(user_id, password_hash=hash_password(check_password(password)))

    def signed_in(self, user_id: str) -> None:
        with writing(self.engine) as conn:
            conn.execute(
                update(users).where(users.c.id == user_id).values(last_login_at=time.time())
            )

    def provision(self, username: str, role: Role) -> User:
        """The local record of a directory user: created at first sign-in, role kept in step
        with the directory's groups at every sign-in (the directory decides, not a stale copy)."""
        found = self.by_name(username)
        if found is None:
            try:
                return self.add(username, None, role, source="ldap")
            except UserExists:  # two first sign-ins at once
                found = self.by_name(username)
                assert found is not None
        user = found[0]
        return self.set_role(user.id, role) if user.role != role else user

    # --- sessions --------------------------------------------------------------------------

    def start_session(self, user: User, method: str, max_s: float) -> str:
        """A new session for ``user``; returns its id (the cookie's value), stored only hashed."""
        session_id = new_secret()
        now = time.time()
        with writing(self.engine) as conn:
            conn.execute(
                insert(sessions).values(
                    id_hash=digest(session_id),
                    user_id=user.id,
                    method=method,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=now + max_s,
                )
            )
            # Sessions that ended (idle or absolute) are cleared as new ones start.
            conn.execute(delete(sessions).where(sessions.c.expires_at < now))
        return session_id

    def session_principal(self, session_id: str, idle_s: float) -> Principal | None:
        """The principal of a live session of an enabled user, else None."""
        now = time.time()
        hashed = digest(session_id)
        query = (
            select(sessions, users.c.username, users.c.role, users.c.disabled)
            .join(users, users.c.id == sessions.c.user_id)
            .where(sessions.c.id_hash == hashed)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None or row.disabled:
            return None
        if row.expires_at <= now or row.last_seen_at + idle_s <= now:
            self.end_session(hashed)
            return None
        if now - row.last_seen_at > min(SESSION_TOUCH_S, idle_s / 4):
            with writing(self.engine) as conn:
                conn.execute(
                    update(sessions).where(sessions.c.id_hash == hashed).values(last_seen_at=now)
                )
        return Principal(
            user_id=row.user_id,
            username=row.username,
            role=row.role,
            scopes=role_scopes(row.role),
            method="session",
            session_hash=hashed,
        )

    def end_session(self, session_hash: str) -> None:
        with writing(self.engine) as conn:
            conn.execute(delete(sessions).where(sessions.c.id_hash == session_hash))

    def purge_sessions(self, idle_s: float) -> int:
        now = time.time()
        ended = or_(sessions.c.expires_at <= now, sessions.c.last_seen_at + idle_s <= now)
        with writing(self.engine) as conn:
            return int(conn.execute(delete(sessions).where(ended)).rowcount)


ADMIN_PASSWORD_ENV: Final = "HUSHSCRIBE_ADMIN_PASSWORD"  # noqa: S105  (its name)


def first_admin(store: UserStore, password: str | None) -> tuple[User, str | None] | None:
    """On a database without users: create ``admin`` with ``password`` (from the environment)
    or a random one. Returns ``(user, generated password or None)``; None if users exist."""
    if store.count() > 0:
        return None
    generated = None if password else new_secret()[:24]
    try:
        user = store.add("admin", password or generated, "admin")
    except UserExists:  # another process made it first
        return None
    return user, generated
