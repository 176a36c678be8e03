"""Every kind of audit event, one class each, and the one way to build them.

An event is what happened (type, actor, source address, action, target, outcome, details); the
log adds its sequence number, time, chain hash and MAC when it writes it. Details are checked
against the event's own list, so a record cannot carry a field nobody meant it to — least of all
a transcript, a password, a key or a session id. An unknown event type is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Literal

from hushscribe.errors import InvalidRequest

Outcome = Literal["ok", "denied", "failed"]

SECRET_WORDS: Final = ("password", "secret", "token", "session", "cookie", "authorization")
"""No detail's name may contain these: a secret has no place in the log, whatever it is called."""


class UnknownEvent(InvalidRequest):
    code = "unknown_audit_event"


@dataclass(frozen=True)
class Actor:
    """Who acted: a user (by name and id), the key they used, how they authenticated; or the
    service itself (``method="service"``) and the operator at a shell (``method="cli"``)."""

    user: str | None
    user_id: str | None = None
    key_id: str | None = None
    method: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"user": self.user, "user_id": self.user_id, "key_id": self.key_id,
                "method": self.method}  # fmt: skip


SERVICE: Final = Actor(user=None, method="service")


@dataclass(frozen=True)
class AuditEvent:
    type: ClassVar[str]
    action: ClassVar[str]
    allowed: ClassVar[frozenset[str]] = frozenset()
    required: ClassVar[frozenset[str]] = frozenset()

    actor: Actor
    address: str | None = None
    target: str | None = None
    outcome: Outcome = "ok"
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.details) - self.allowed
        if unknown:
            raise ValueError(f"{self.type}: details {sorted(unknown)} are not part of this event")
        missing = self.required - set(self.details)
        if missing:
            raise ValueError(f"{self.type}: details {sorted(missing)} are required")
        for name in self.details:
            if any(word in name.lower() for word in SECRET_WORDS):
                raise ValueError(f"{self.type}: a detail named {name!r} would hold a secret")

    def body(self) -> dict[str, Any]:
        """The record's content before the log numbers, times, chains and MACs it."""
        return {
            "type": self.type,
            "actor": self.actor.as_json(),
            "address": self.address,
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
            "details": self.details,
        }


_AUDIO = frozenset({"audio_sha256", "bytes", "filename", "duration_s"})
_MODEL = frozenset({"model", "model_sha256", "language", "task"})
_WHY = frozenset({"reason", "code"})


def _event(name: str, action: str, allowed: frozenset[str] = frozenset(), required: frozenset[str]
           = frozenset()) -> type[AuditEvent]:  # fmt: skip
    cls = type(name, (AuditEvent,), {"type": _snake(name), "action": action, "allowed": allowed,
                                     "required": required, "__module__": __name__})  # fmt: skip
    return dataclass(frozen=True)(cls)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


# --- identity and access -----------------------------------------------------------------------
LoginOk = _event("LoginOk", "login", frozenset({"auth"}))
LoginFailed = _event("LoginFailed", "login", _WHY | {"auth"})
Logout = _event("Logout", "logout")
KeyCreated = _event("KeyCreated", "create_key", frozenset({"owner", "scopes", "expires_at"}))
KeyRevoked = _event("KeyRevoked", "revoke_key", frozenset({"owner"}))
UserChanged = _event(
    "UserChanged", "change_user", frozenset({"change", "role", "disabled", "credential_reset"})
)
AccessDenied = _event("AccessDenied", "access", _WHY | {"by", "needs", "path", "method"})
# --- jobs --------------------------------------------------------------------------------------
Upload = _event("Upload", "upload", _AUDIO | _MODEL | {"job_id"}, frozenset({"audio_sha256"}))
TranscriptionDone = _event(
    "TranscriptionDone", "transcribe",
    _AUDIO | _MODEL | {"processing_s", "segments", "text", "text_included", "attempts",
                       "requested_model", "fallbacks"},
)  # fmt: skip
TranscriptionFailed = _event(
    "TranscriptionFailed", "transcribe", _AUDIO | _MODEL | _WHY | {"processing_s", "attempts"}
)
ResultRead = _event("ResultRead", "read_result", frozenset({"format"}))
JobDeleted = _event("JobDeleted", "delete_job")
JobCancelled = _event("JobCancelled", "cancel_job", _WHY)
SpeakersRenamed = _event("SpeakersRenamed", "rename_speakers", frozenset({"speakers"}))
LiveStream = _event(
    "LiveStream", "stream", _AUDIO | _MODEL | {"reason", "items", "job_id", "wall_s"}
)
# --- service and models ------------------------------------------------------------------------
SettingsChanged = _event("SettingsChanged", "change_settings", frozenset({"changed"}))
ModelImported = _event("ModelImported", "import_model", _MODEL | {"source", "bytes"})
ModelRemoved = _event("ModelRemoved", "remove_model", _MODEL)
ModelVerifyFailed = _event("ModelVerifyFailed", "verify_model", _MODEL | _WHY)
EgressBlocked = _event("EgressBlocked", "connect", frozenset({"host", "port", "caller"}))
ServiceStart = _event("ServiceStart", "start", frozenset({"version", "role", "pid", "host"}))
ServiceStop = _event("ServiceStop", "stop", frozenset({"version", "role", "pid", "host"}))
AuditVerified = _event(
    "AuditVerified", "verify_audit", frozenset({"records", "ok", "first_bad_seq", "damage"})
)
AuditExported = _event(
    "AuditExported", "export_audit", frozenset({"records", "from", "to", "format"})
)
# --- the log's own records (written by the log, not by callers) ----------------------------------
_SIGNED = frozenset({"head_seq", "head_hash", "signature", "public_key_sha256", "file", "files"})
Checkpoint = _event("Checkpoint", "checkpoint", _SIGNED)

EVENT_TYPES: Final[dict[str, type[AuditEvent]]] = {
    cls.type: cls
    for cls in (
        LoginOk, LoginFailed, Logout, KeyCreated, KeyRevoked, UserChanged, AccessDenied, Upload,
        TranscriptionDone, TranscriptionFailed, ResultRead, JobDeleted, JobCancelled, LiveStream,
        SpeakersRenamed,
        SettingsChanged, ModelImported, ModelRemoved, ModelVerifyFailed, EgressBlocked,
        ServiceStart, ServiceStop, AuditVerified, AuditExported, Checkpoint,
    )
}  # fmt: skip


def event(type_name: str, actor: Actor, **fields: Any) -> AuditEvent:
    """An event of the named type; :class:`UnknownEvent` for a type that does not exist."""
    cls = EVENT_TYPES.get(type_name)
    if cls is None:
        raise UnknownEvent(f"unknown audit event type {type_name[:64]!r}")
    return cls(actor=actor, **fields)
