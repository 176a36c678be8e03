"""Every access decision in one record: who, from where, what, and the outcome.

Each decision is logged (logger ``hushscribe.access``, one JSON object per line, values
JSON-encoded so that a name holding CR/LF cannot forge a line) and handed to the sink of the
current context: the audit log of the app (or CLI command) that made it. A sink that cannot
write raises (``AuditUnavailable``), and the action it records is not done. Secrets (passwords,
keys, session ids) are never part of a decision.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger("hushscribe.access")


@dataclass(frozen=True)
class Decision:
    action: str  # "login", "logout", "request", "key_created", "key_revoked", "user_changed"
    outcome: str  # "ok", "denied_address", "denied_auth", "denied_permission", "throttled", …
    address: str | None
    actor: str | None = None  # the user's name when known (for a failed login: the name typed)
    method: str | None = None  # how the actor authenticated: session, key, static_key, basic, cli…
    target: str | None = None  # what was acted on: a path, a user, a key id
    details: dict[str, Any] = field(default_factory=dict)
    user_id: str | None = None
    key_id: str | None = None


Sink = Callable[[Decision], None]
_sink: ContextVar[Sink | None] = ContextVar("hushscribe_decision_sink", default=None)


def use_sink(sink: Sink | None) -> None:
    """Send this context's decisions (and those of threads it starts) to ``sink``."""
    _sink.set(sink)


def record(decision: Decision) -> None:
    line = json.dumps({k: v for k, v in asdict(decision).items() if v not in (None, {})})
    (log.info if decision.outcome == "ok" else log.warning)(line)
    sink = _sink.get()
    if sink is not None:
        sink(decision)
