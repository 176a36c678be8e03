"""Transcription options: validated once, recorded with every transcript."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hushscribe.errors import InvalidOption, describe_validation_errors
from hushscribe.languages import normalise_language
from hushscribe.settings import EngineSettings, ZhScript

MAX_PROMPT_CHARS = 1000
"""Whisper sees at most 224 prompt tokens; 1000 characters is well past that and bounds memory."""

DEFAULT_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)

MAX_SPEAKERS = 20
"""More voices than a meeting room holds: clustering past it finds noise, not people."""


class VadParameters(BaseModel):
    """Silero VAD settings (the subset worth exposing)."""

    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(0.5, gt=0, lt=1, description="Speech probability threshold.")
    min_speech_duration_ms: int = Field(0, ge=0, le=60_000)
    min_silence_duration_ms: int = Field(2000, ge=0, le=60_000)
    speech_pad_ms: int = Field(400, ge=0, le=10_000)


class TranscribeOptions(BaseModel):
    """What a caller may choose for one transcription. ``None`` means: use the setting."""

    model_config = ConfigDict(extra="forbid")

    task: Literal["transcribe", "translate"] = "transcribe"
    language: str | None = Field(None, description="ISO code or English name; None detects it.")
    beam_size: int | None = Field(None, ge=1, le=20)
    temperature: tuple[float, ...] = DEFAULT_TEMPERATURES
    initial_prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS)
    hotwords: str | None = Field(None, max_length=MAX_PROMPT_CHARS)
    vad: bool = True
    vad_parameters: VadParameters = Field(default_factory=VadParameters)
    word_timestamps: bool = False
    condition_on_previous_text: bool = True
    batched: bool | None = Field(None, description="Batched pipeline; None decides by length.")
    batch_size: int | None = Field(None, ge=1, le=64)
    zh_script: ZhScript | None = None
    diarize: bool = Field(False, description="Label who spoke (speaker diarization).")
    num_speakers: int | None = Field(None, ge=1, le=MAX_SPEAKERS)
    min_speakers: int | None = Field(None, ge=1, le=MAX_SPEAKERS)
    max_speakers: int | None = Field(None, ge=1, le=MAX_SPEAKERS)

    @field_validator("language")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "" or value.strip().lower() == "auto":
            return None
        code = normalise_language(value)
        if code is None:
            raise ValueError(f"unknown language {value!r}; use an ISO code such as 'en' or 'de'")
        return code

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or len(value) > 10 or any(not 0.0 <= t <= 1.0 for t in value):
            raise ValueError("temperature must be 1-10 values between 0 and 1")
        return value

    @model_validator(mode="after")
    def _speakers(self) -> TranscribeOptions:
        counts = (self.num_speakers, self.min_speakers, self.max_speakers)
        if not self.diarize and any(n is not None for n in counts):
            raise ValueError("num_speakers, min_speakers and max_speakers need diarize=true")
        if self.num_speakers is not None and (
            self.min_speakers is not None or self.max_speakers is not None
        ):
            raise ValueError("give num_speakers, or min_speakers/max_speakers, not both")
        if (self.min_speakers or 1) > (self.max_speakers or MAX_SPEAKERS):
            raise ValueError("min_speakers must not be more than max_speakers")
        return self

    def resolved(self, settings: EngineSettings) -> TranscribeOptions:
        """Fill every ``None`` that has a setting, so the record shows what really ran."""
        return self.model_copy(
            update={
                "beam_size": self.beam_size or settings.beam_size,
                "batch_size": self.batch_size or settings.batch_size,
                "zh_script": self.zh_script or settings.zh_script,
            }
        )


def make_options(**values: Any) -> TranscribeOptions:
    """Build options from untrusted values, raising :class:`InvalidOption` with a readable text."""
    try:
        return TranscribeOptions(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        problems = describe_validation_errors(exc.errors())
        problems = problems.replace("Value error, ", "").replace("(root): ", "")
        raise InvalidOption(f"invalid option: {problems}") from None
