"""Every access decision in one record: who, from where, what, and the outcome.

Today each decision is logged (logger ``hushscribe.access``, one JSON object per line, values
JSON-encoded so that a name holding CR/LF cannot forge a line). The audit log subscribes here: it
receives the same :class:`Decision` objects, so no access path can skip it. Secrets (passwords,
keys, session ids) are never part of a decision.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger("hushscribe.access")

_listeners: list[Callable[[Decision], None]] = []


@dataclass(frozen=True)
class Decision:
    action: str  # e.g. "login", "request", "key_created", "user_changed"
    outcome: str  # "ok", "denied_address", "denied_auth", "denied_permission", "throttled", …
    address: str | None
    actor: str | None = None  # user name (and key id) when known
    method: str | None = None  # how the actor authenticated
    target: str | None = None  # what was acted on: a path, a user, a key id
    details: dict[str, Any] = field(default_factory=dict)


def subscribe(listener: Callable[[Decision], None]) -> None:
    """Receive every decision from now on (the audit log does)."""
    _listeners.append(listener)


def record(decision: Decision) -> None:
    line = json.dumps({k: v for k, v in asdict(decision).items() if v not in (None, {})})
    (log.info if decision.outcome == "ok" else log.warning)(line)
    for listener in list(_listeners):
        listener(decision)
