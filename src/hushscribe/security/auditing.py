"""Access decisions (``security/decisions.py``) as audit events: one mapping, in one place."""

from __future__ import annotations

import os
import socket
from typing import Any, Final, Protocol

from hushscribe import __version__
from hushscribe.audit.events import EVENT_TYPES, SERVICE, Actor, AuditEvent, Outcome, event
from hushscribe.security.decisions import Decision
from hushscribe.security.principal import Principal


class AuditLogLike(Protocol):
    def append(self, event: AuditEvent) -> int | None: ...


_DENIED_BY: Final = {
    "denied_address": "address",
    "denied_auth": "auth",
    "denied_permission": "permission",
    "throttled": "auth",
}


def actor_of(decision: Decision) -> Actor:
    return Actor(decision.actor, decision.user_id, decision.key_id, decision.method)


def as_event(decision: Decision) -> AuditEvent | None:
    """The audit event a decision is, or None for one the log does not keep."""
    details: dict[str, Any] = dict(decision.details)
    outcome: Outcome = "ok" if decision.outcome == "ok" else "denied"
    if decision.action == "login":
        if decision.outcome == "ok":
            type_, details = "login_ok", {"auth": decision.method}
        else:
            type_ = "login_failed"
            details = {"reason": decision.outcome, "code": details.get("code")}
            outcome = "failed" if decision.outcome == "directory_unavailable" else "denied"
    elif decision.action == "request":
        type_ = "access_denied"
        details = {
            "by": _DENIED_BY.get(decision.outcome, decision.outcome),
            **{k: v for k, v in details.items() if k in ("code", "needs", "path", "method")},
        }
    elif decision.action in EVENT_TYPES:
        type_ = decision.action
    else:
        return None
    cls = EVENT_TYPES[type_]
    kept = {k: v for k, v in details.items() if k in cls.allowed and v is not None}
    return cls(
        actor=actor_of(decision), address=decision.address, target=decision.target,
        outcome=outcome, details=kept,
    )  # fmt: skip


def actor(principal: Principal | None) -> Actor:
    if principal is None:
        return SERVICE
    return Actor(principal.username, principal.user_id, principal.key_id, principal.method)


class Auditor:
    """One app's (or command's) way into its audit log: decisions and events alike. Raises
    ``AuditUnavailable`` when a record cannot be written (unless the log fails open)."""

    def __init__(self, log: AuditLogLike) -> None:
        self.log = log

    def __call__(self, decision: Decision) -> None:
        found = as_event(decision)
        if found is not None:
            self.log.append(found)

    def event(
        self,
        type_: str,
        principal: Principal | None,
        address: str | None = None,
        target: str | None = None,
        outcome: Outcome = "ok",
        **details: Any,
    ) -> None:
        kept = {k: v for k, v in details.items() if v is not None}
        self.log.append(
            event(type_, actor(principal), address=address, target=target, outcome=outcome,
                  details=kept)
        )  # fmt: skip

    def service(self, type_: str, role: str = "all") -> None:
        """``service_start`` / ``service_stop`` of this process."""
        self.event(
            type_, None, version=__version__, role=role, pid=os.getpid(), host=socket.gethostname()
        )
