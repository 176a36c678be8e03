"""Who a request acts for: one :class:`Principal`, whatever the way it authenticated.

Roles grant scopes; a key carries scopes of its own, and acts with those its owner's role still
grants (a user demoted from admin loses the admin scope of the keys they made as admin).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal, get_args

from hushscribe.settings import Role, Scope

AuthMethod = Literal["session", "key", "static_key", "basic", "anonymous"]

SCOPES: Final[tuple[Scope, ...]] = get_args(Scope)

ROLE_SCOPES: Final[dict[Role, frozenset[Scope]]] = {
    # Admins manage users, keys and models and see every job's metadata (not its transcript).
    "admin": frozenset(SCOPES),
    # Users transcribe and read their own jobs.
    "user": frozenset({"transcribe", "jobs:read"}),
    # Auditors read the audit log, not transcripts.
    "auditor": frozenset({"audit:read"}),
}


@dataclass(frozen=True)
class Principal:
    user_id: str  # the owner of the jobs this principal creates
    username: str
    role: Role
    scopes: frozenset[Scope]
    method: AuthMethod
    key_id: str | None = None
    session_hash: str | None = field(default=None, repr=False)  # to end this session on logout

    def can(self, scope: Scope) -> bool:
        return scope in self.scopes

    @property
    def sees_all_jobs(self) -> bool:
        """Admins see the metadata of every job (results stay their owners')."""
        return "admin" in self.scopes

    @property
    def actor(self) -> str:
        """How audit records name this principal: the user, and the key when one was used."""
        return f"{self.username} ({self.method}{f' {self.key_id}' if self.key_id else ''})"


def role_scopes(role: str) -> frozenset[Scope]:
    for name, scopes in ROLE_SCOPES.items():
        if name == role:
            return scopes
    return frozenset()


def parse_scopes(values: list[str] | tuple[str, ...]) -> list[Scope]:
    """Scopes named by a caller, checked and de-duplicated in a stable order."""
    unknown = [v for v in values if v not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scope {unknown[0]!r}: choose from {', '.join(SCOPES)}")
    return [s for s in SCOPES if s in values]
