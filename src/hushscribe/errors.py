"""Every error hushscribe reports on purpose: a stable ``code``, an HTTP ``status``, one JSON shape.

The shape is OpenAI's (``{"error": {"message", "type", "code"}}``) so that OpenAI clients show our
messages unchanged. Messages are written for the person who reads them: what went wrong and what to
do. Nothing here imports the rest of the package.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar


class HushscribeError(Exception):
    """Base of all expected errors. Subclasses set ``code``, ``status`` and ``type``."""

    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON error body sent to clients."""
        return error_body(self.message, self.type, self.code)


def error_body(message: str, type_: str, code: str) -> dict[str, Any]:
    """One error shape for every response, expected or not."""
    return {"error": {"message": message, "type": type_, "code": code}}


class InvalidRequest(HushscribeError):
    """The caller asked for something that cannot be done as asked."""

    code = "invalid_request"
    status = 400
    type = "invalid_request_error"


class ConfigError(HushscribeError):
    """The configuration file or environment holds an invalid value."""

    code = "config_invalid"
    status = 500
    type = "server_error"


# --- media -------------------------------------------------------------------------------------


class MediaError(InvalidRequest):
    """Base for every problem with an uploaded or given media file."""

    code = "media_error"


class UnsupportedMedia(MediaError):
    code = "unsupported_media"
    status = 400  # what OpenAI answers for a file it cannot read; its clients expect it


class DecodeFailed(MediaError):
    code = "decode_failed"
    status = 422


class DecodeTimeout(MediaError):
    code = "decode_timeout"
    status = 422


class EmptyAudio(MediaError):
    code = "empty_audio"
    status = 422


class TooLarge(MediaError):
    code = "too_large"
    status = 413


class TooLong(MediaError):
    code = "too_long"
    status = 413


class TooManyChannels(MediaError):
    code = "too_many_channels"
    status = 422


class SampleRateTooHigh(MediaError):
    code = "sample_rate_too_high"
    status = 422


# --- models ------------------------------------------------------------------------------------


class ModelNotFound(HushscribeError):
    code = "model_not_found"
    status = 404
    type = "invalid_request_error"


class InvalidModel(InvalidRequest):
    """A directory or archive that is not a CTranslate2 Whisper model."""

    code = "invalid_model"


class ModelExists(InvalidRequest):
    code = "model_exists"
    status = 409


class ModelChecksumMismatch(HushscribeError):
    """A model file differs from its manifest (or a demo package from its pinned hash)."""

    code = "model_checksum_mismatch"
    status = 500


class DemoModelsUnavailable(HushscribeError):
    code = "demo_models_unavailable"
    status = 500


class UnknownModel(InvalidRequest):
    """A request names a model that is neither installed nor an alias."""

    code = "model_not_found"


class ModelLoadFailed(HushscribeError):
    """A verified model that the engine could not load (out of memory, unreadable weights)."""

    code = "model_load_failed"
    status = 503


class ModelOverBudget(HushscribeError):
    """Loading a model would pass ``models.memory_budget_mb``."""

    code = "model_over_budget"
    status = 503


class InvalidOption(InvalidRequest):
    """A transcription option that is unknown or does not fit the model."""

    code = "invalid_option"


# --- service ----------------------------------------------------------------------------------


class Unauthorized(HushscribeError):
    code = "invalid_api_key"
    status = 401
    type = "authentication_error"


class UnsupportedBody(InvalidRequest):
    code = "unsupported_body"
    status = 415


class QueueFull(HushscribeError):
    code = "queue_full"
    status = 429
    type = "rate_limit_error"


class RequestTimeout(InvalidRequest):
    code = "request_timeout"
    status = 408


class ClientGone(InvalidRequest):
    """The client hung up while its synchronous request waited (nginx's 499)."""

    code = "client_closed_request"
    status = 499


class JobTimeout(HushscribeError):
    code = "job_timeout"
    status = 504


class InsufficientStorage(HushscribeError):
    """The server's disk (or database) is full."""

    code = "insufficient_storage"
    status = 507


_FULL_ERRNOS = (28, 122)  # ENOSPC, EDQUOT
_FULL_TEXTS = ("database or disk is full", "no space left on device", "could not extend file")


def is_storage_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps: a database driver's error) says the disk is full."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in _FULL_ERRNOS:
            return True
        if getattr(seen, "sqlstate", None) == "53100" or getattr(seen, "pgcode", None) == "53100":
            return True  # PostgreSQL disk_full
        if any(text in str(seen).lower() for text in _FULL_TEXTS):
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


class ProcessingTimeout(HushscribeError):
    """A job's transcription stopped making progress (a native call hung); its worker was
    restarted. Not retried: the same input would hang again."""

    code = "processing_timeout"
    status = 500


class JobNotFound(HushscribeError):
    code = "job_not_found"
    status = 404
    type = "invalid_request_error"


class AudioNotRetained(HushscribeError):
    code = "audio_not_retained"
    status = 404
    type = "invalid_request_error"


class JobNotDone(HushscribeError):
    code = "job_not_done"
    status = 409
    type = "invalid_request_error"


class JobCancelled(HushscribeError):
    """The job was cancelled (by its owner, or because its client went away) before it ended."""

    code = "job_cancelled"
    status = 409
    type = "invalid_request_error"


class HeadersTooLarge(InvalidRequest):
    code = "headers_too_large"
    status = 431


# --- identity and access ----------------------------------------------------------------------


class Forbidden(HushscribeError):
    """Authenticated, but this principal may not do this."""

    code = "forbidden"
    status = 403
    type = "permission_error"


class AddressNotAllowed(Forbidden):
    """The client's address is outside ``network.allow``."""

    code = "address_not_allowed"


class CsrfFailed(Forbidden):
    """A cookie-authenticated change without the session's CSRF token."""

    code = "csrf_failed"


class InvalidCredentials(Unauthorized):
    """Wrong user name or password: one message for both, so names cannot be probed."""

    code = "invalid_credentials"


class TooManyAttempts(HushscribeError):
    code = "too_many_attempts"
    status = 429
    type = "rate_limit_error"


class DirectoryUnavailable(HushscribeError):
    """The LDAP directory cannot be reached: sign-in fails closed."""

    code = "directory_unavailable"
    status = 503
    type = "server_error"


class UserNotFound(HushscribeError):
    code = "user_not_found"
    status = 404
    type = "invalid_request_error"


class UserExists(InvalidRequest):
    code = "user_exists"
    status = 409


class AuditUnavailable(HushscribeError):
    """A record could not be written to the audit log: the action it records is not done."""

    code = "audit_unavailable"
    status = 503
    type = "server_error"


class KeyNotFound(HushscribeError):
    code = "key_not_found"
    status = 404
    type = "invalid_request_error"


def describe_validation_errors(errors: Iterable[Mapping[str, Any]]) -> str:
    """Pydantic's errors (``exc.errors()``) as one line: ``loc: msg; loc: msg``."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())) or '(root)'}: {e.get('msg', '')}"
        for e in errors
    )


def status_for_code(code: str | None) -> int:
    """The HTTP status of an error code, for errors that were stored (e.g. a failed job)."""

    def walk(cls: type[HushscribeError]) -> list[type[HushscribeError]]:
        return [cls] + [c for sub in cls.__subclasses__() for c in walk(sub)]

    for cls in walk(HushscribeError):
        if cls.code == code:
            return cls.status
    return 500


def type_for_status(status: int) -> str:
    return "invalid_request_error" if 400 <= status < 500 else "server_error"


# --- converting checkpoints (engine/convert.py) -------------------------------------------------


class UnsafeCheckpoint(InvalidModel):
    """A checkpoint's pickle names something other than tensors and containers: refused unrun."""

    code = "unsafe_checkpoint"


class TokenizerRequired(InvalidModel):
    """An OpenAI checkpoint holds no tokenizer, and none that fits it was given or installed."""

    code = "tokenizer_required"


class ConverterUnavailable(HushscribeError):
    """Converting this kind of checkpoint needs the optional ``convert`` extra."""

    code = "converter_unavailable"
    status = 500
    type = "server_error"
