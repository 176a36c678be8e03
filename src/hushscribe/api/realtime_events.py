"""The client side of ``/v1/realtime``: events in (OpenAI Realtime transcription sessions, the
current form and the beta one), the effective session they build, and the ``error`` events that
answer a bad one. The audio they carry: :mod:`hushscribe.api.realtime_audio`.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hushscribe.errors import describe_validation_errors
from hushscribe.languages import normalise_language

RATES: Final = (24_000, 16_000)
"""Input rates accepted: OpenAI's PCM16 is 24 kHz; 16 kHz (Whisper's own) passes through."""
MAX_PROMPT_CHARS: Final = 2_000
"""Whisper reads at most 224 prompt tokens; a longer prompt is a mistake, not a request."""
MAX_SILENCE_MS: Final = 10_000
"""A turn that needs more than 10 s of silence to end never ends in a conversation."""
MAX_PADDING_MS: Final = 5_000

ErrorType = Literal["invalid_request_error", "server_error"]


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


class ClientError(Exception):
    """A problem with one client event: answered with an ``error`` event, the stream goes on."""

    def __init__(
        self, code: str, message: str, *, param: str | None = None,
        type_: ErrorType = "invalid_request_error",
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.type = type_


def error_event(exc: ClientError, client_event_id: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": exc.type, "code": exc.code, "message": exc.message,
                             "param": exc.param}  # fmt: skip
    if client_event_id is not None:
        error["event_id"] = client_event_id
    return {"type": "error", "error": error}


# --- events in -------------------------------------------------------------------------------


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients send fields we do not use (noise_reduction)


class FormatIn(_In):
    type: str = "audio/pcm"
    rate: int = 24_000


class TranscriptionIn(_In):
    model: str | None = Field(None, max_length=128)
    language: str | None = Field(None, max_length=32)
    prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS)


class TurnDetectionIn(_In):
    type: str = "server_vad"
    threshold: float | None = Field(None, ge=0.0, le=1.0)
    prefix_padding_ms: int | None = Field(None, ge=0, le=MAX_PADDING_MS)
    silence_duration_ms: int | None = Field(None, ge=0, le=MAX_SILENCE_MS)


class AudioInputIn(_In):
    format: FormatIn | None = None
    transcription: TranscriptionIn | None = None
    turn_detection: TurnDetectionIn | None = None


class AudioIn(_In):
    input: AudioInputIn | None = None


class SessionIn(_In):
    """``session.update``'s session (the current form)."""

    type: str = "transcription"
    audio: AudioIn | None = None


class BetaSessionIn(_In):
    """``transcription_session.update``'s session (the beta form)."""

    input_audio_format: str | None = None
    input_audio_transcription: TranscriptionIn | None = None
    turn_detection: TurnDetectionIn | None = None


def parse_event(text: str) -> dict[str, Any]:
    """A client message as an event with a ``type``; :class:`ClientError` if it is none."""
    try:
        event = json.loads(text)
    except (ValueError, RecursionError):
        raise ClientError("invalid_json", "the message is not valid JSON") from None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise ClientError("invalid_event", "an event is a JSON object with a 'type'", param="type")
    return event


def client_event_id(event: dict[str, Any]) -> str | None:
    found = event.get("event_id")
    return found[:64] if isinstance(found, str) else None


# --- the effective session -------------------------------------------------------------------


@dataclass(frozen=True)
class TurnDetection:
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500

    def as_json(self) -> dict[str, Any]:
        return {"type": "server_vad", "threshold": self.threshold,
                "prefix_padding_ms": self.prefix_padding_ms,
                "silence_duration_ms": self.silence_duration_ms}  # fmt: skip


@dataclass(frozen=True)
class SessionConfig:
    """What a stream is set to: the model (resolved), language, prompt, input rate, turns."""

    model: str
    language: str | None = None
    prompt: str | None = None
    rate: int = 24_000
    turn_detection: TurnDetection | None = TurnDetection()

    def transcription(self) -> dict[str, Any]:
        return {"model": self.model, "language": self.language, "prompt": self.prompt}

    def turns(self) -> dict[str, Any] | None:
        return self.turn_detection.as_json() if self.turn_detection else None

    def session(self, session_id: str) -> dict[str, Any]:
        """The current form, as ``session.created`` / ``session.updated`` carry it."""
        audio_input = {
            "format": {"type": "audio/pcm", "rate": self.rate},
            "transcription": self.transcription(),
            "turn_detection": self.turns(),
            "noise_reduction": None,
        }
        return {"type": "transcription", "object": "realtime.transcription_session",
                "id": session_id, "audio": {"input": audio_input}, "include": []}  # fmt: skip

    def beta_session(self, session_id: str) -> dict[str, Any]:
        """The beta form, as ``transcription_session.updated`` carries it."""
        return {"id": session_id, "object": "realtime.transcription_session",
                "input_audio_format": "pcm16", "input_audio_transcription": self.transcription(),
                "turn_detection": self.turns(), "input_audio_noise_reduction": None,
                "include": []}  # fmt: skip


def _validated(cls: type[_In], raw: Any, param: str) -> Any:
    if not isinstance(raw, dict):
        raise ClientError("invalid_value", f"'{param}' must be an object", param=param)
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        problems = describe_validation_errors(exc.errors())
        raise ClientError("invalid_value", f"invalid {param}: {problems}", param=param) from None


def _turns(
    current: TurnDetection | None, given: TurnDetectionIn | None, param: str
) -> TurnDetection | None:
    if given is None:  # null: turns end only on input_audio_buffer.commit
        return None
    if given.type != "server_vad":
        raise ClientError(
            "invalid_value", f"{param}.type {given.type[:32]!r}: only 'server_vad' (or null)",
            param=f"{param}.type",
        )  # fmt: skip
    base = current or TurnDetection()
    values = {k: v for k, v in given.model_dump(exclude={"type"}).items() if v is not None}
    return replace(base, **values)


def _transcription(config: SessionConfig, given: TranscriptionIn, param: str) -> SessionConfig:
    """Language and prompt applied; the model is the caller's to resolve (it reads the disk)."""
    fields = given.model_fields_set
    language = config.language
    if "language" in fields:
        language = None
        if given.language:
            language = normalise_language(given.language)
            if language is None:
                raise ClientError(
                    "invalid_language",
                    f"unknown language {given.language!r}; use an ISO code such as 'en' or 'de'",
                    param=f"{param}.language",
                )
    prompt = (given.prompt or None) if "prompt" in fields else config.prompt
    return replace(config, language=language, prompt=prompt)


@dataclass(frozen=True)
class Update:
    """A session update, checked: the new config, and the model asked for (None: unchanged)."""

    config: SessionConfig
    model: str | None
    model_given: bool


def apply_update(config: SessionConfig, event: dict[str, Any], beta: bool) -> Update:
    """``session.update`` (or the beta ``transcription_session.update``) on ``config``. Fields
    left out keep their values; ``turn_detection: null`` turns server VAD off."""
    raw = event.get("session")
    if beta:
        beta_in: BetaSessionIn = _validated(BetaSessionIn, raw, "session")
        given_fields = beta_in.model_fields_set
        if beta_in.input_audio_format not in (None, "pcm16"):
            raise ClientError(
                "invalid_value", "input_audio_format: only 'pcm16' (24 kHz PCM16 mono)",
                param="session.input_audio_format",
            )  # fmt: skip
        if beta_in.input_audio_format == "pcm16":
            config = replace(config, rate=24_000)
        transcription, turns = beta_in.input_audio_transcription, beta_in.turn_detection
        turns_given = "turn_detection" in given_fields
        prefix = "session"
    else:
        session: SessionIn = _validated(SessionIn, raw, "session")
        if session.type != "transcription":
            raise ClientError(
                "invalid_value", "session.type: this endpoint serves 'transcription' sessions",
                param="session.type",
            )  # fmt: skip
        audio_input = session.audio.input if session.audio else None
        transcription = audio_input.transcription if audio_input else None
        turns = audio_input.turn_detection if audio_input else None
        turns_given = audio_input is not None and "turn_detection" in audio_input.model_fields_set
        prefix = "session.audio.input"
        fmt = audio_input.format if audio_input else None
        if fmt is not None:
            if fmt.type != "audio/pcm" or fmt.rate not in RATES:
                raise ClientError(
                    "invalid_value",
                    "audio.input.format: 'audio/pcm' at 24000 or 16000 Hz (PCM16 mono)",
                    param="session.audio.input.format",
                )
            config = replace(config, rate=fmt.rate)
    model: str | None = None
    model_given = False
    if transcription is not None:
        config = _transcription(config, transcription, f"{prefix}.transcription")
        model_given = "model" in transcription.model_fields_set
        model = transcription.model
    if turns_given:
        config = replace(config, turn_detection=_turns(config.turn_detection, turns, prefix))
    return Update(config, model, model_given)
