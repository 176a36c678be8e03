"""Password hashing (argon2id, argon2-cffi's RFC 9106 low-memory profile) and secrets.

An unknown user name is checked against a dummy hash made with the same parameters, so that
"no such user" and "wrong password" take the same time and give the same answer.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
import unicodedata

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

PASSWORD_MIN_CHARS = 12
PASSWORD_MAX_CHARS = 1024  # argon2 takes any length; a cap stops a megabyte "password"

_hasher = PasswordHasher()  # argon2id, t=3, m=64 MiB, p=4 (RFC 9106 second recommendation)


def configure(time_cost: int, memory_kib: int, parallelism: int) -> None:
    """Hash new passwords with these argon2id costs (stored hashes keep their own), and make the
    dummy hash with them too, so an unknown name costs what a real one does."""
    global _hasher
    params = (time_cost, memory_kib, parallelism)
    if params != (_hasher.time_cost, _hasher.memory_cost, _hasher.parallelism):
        _hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism
        )
        _dummy_hash.cache_clear()


def _normal(password: str) -> bytes:
    # NFKC: the same password typed on two keyboards (composed or decomposed é) is one password.
    return unicodedata.normalize("NFKC", password).encode("utf-8", "surrogatepass")


def password_weakness(password: str) -> str | None:
    """Why a new password is refused, or None."""
    if len(password) < PASSWORD_MIN_CHARS:
        return f"a password needs at least {PASSWORD_MIN_CHARS} characters"
    if len(password) > PASSWORD_MAX_CHARS:
        return f"a password has at most {PASSWORD_MAX_CHARS} characters"
    if len(set(password)) < 5:
        return "a password needs more than a few different characters"
    return None


def hash_password(password: str) -> str:
    return _hasher.hash(_normal(password))


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_bytes(16))


def verify_password(stored: str | None, password: str) -> bool:
    """True when ``password`` matches ``stored``; with ``stored=None`` (no such user, or one
    without a local password) the same work is done against a dummy hash and False returned."""
    target = stored if stored is not None else _dummy_hash()
    try:
        ok = bool(_hasher.verify(target, _normal(password[:PASSWORD_MAX_CHARS])))
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        ok = False
    return ok and stored is not None


def warm_up() -> None:
    """Make the dummy hash now, so the first failed sign-in is not slower than the others."""
    _dummy_hash()


def new_secret(prefix: str = "") -> str:
    """256 random bits, URL-safe: API keys (``hs_…``) and session ids."""
    return prefix + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    """SHA-256 hex of a high-entropy secret (key or session id): what the database stores."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()
