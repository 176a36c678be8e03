"""Settings of live captions (``/v1/realtime``): how many streams, for how long, how big a frame.
Part of :class:`hushscribe.settings.Settings` (``streams``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class StreamSettings(BaseModel):
    """Live transcription streams, served by the worker processes next to file jobs."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Serve `/v1/realtime?intent=transcription`.")
    max_per_user: int = Field(
        2, ge=0, description="Concurrent streams one user or API key may hold."
    )
    max_total: int = Field(
        8,
        ge=0,
        description="Concurrent streams over all users (each worker takes a share: "
        "`max_per_worker`). A stream beyond either limit is refused with HTTP 429.",
    )
    max_per_worker: int = Field(
        8, ge=1, description="Streams one worker process decodes together, as one batch a step."
    )
    idle_timeout_s: float = Field(
        30.0, gt=0, description="Close a stream that sent no audio for this long."
    )
    max_duration_s: float = Field(
        4 * 3600.0, gt=0, description="Close a stream after this much audio (seconds)."
    )
    max_frame_bytes: int = Field(
        1 << 20,
        ge=1024,
        description="Largest WebSocket message accepted (an append of base64 audio is about "
        "64 KB a second at 24 kHz); a larger one gets an `error` event and is dropped.",
    )
    step_s: float = Field(
        1.0,
        gt=0,
        description="New audio a stream gathers before its next decode: shorter shows words "
        "sooner and costs more.",
    )
    default_model: str | None = Field(
        None,
        description="Model for streams that name none; unset: the engine's default model.",
    )
