"""Probe and decode untrusted media to 16 kHz mono float32 through PyAV (FFmpeg), with limits.

Every input is treated as hostile:

* only local files, opened through FFmpeg's ``file`` protocol (``protocol_whitelist``), so a
  playlist cannot make FFmpeg open other URLs or files;
* only the demuxers in :data:`ALLOWED_FORMATS` (``format_whitelist``): no HLS, concat, SBG, image
  sequences or other formats that read further files or synthesise input;
* size, duration, channel and sample-rate limits are checked from the file and the container
  header *before* decoding, and duration again while decoding, so a lying header cannot pass;
* a wall-clock limit on decoding;
* every failure is one of the typed errors of :mod:`hushscribe.errors`, never an FFmpeg trace.

Decoding writes nothing to disk.
"""

from __future__ import annotations

import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from hushscribe.errors import (
    DecodeFailed,
    DecodeTimeout,
    EmptyAudio,
    SampleRateTooHigh,
    TooLarge,
    TooLong,
    TooManyChannels,
    UnsupportedMedia,
)
from hushscribe.settings import AudioLimits

SAMPLE_RATE = 16_000
"""Whisper's input rate."""

ALLOWED_FORMATS: tuple[str, ...] = (
    "wav",
    "w64",
    "mp3",
    "flac",
    "ogg",  # Vorbis, Opus, Speex, FLAC in Ogg
    "matroska",  # MKV and WEBM share FFmpeg's "matroska,webm" demuxer
    "mov",  # MP4, M4A, MOV, 3GP
    "aac",  # raw ADTS
    "aiff",
    "asf",  # WMA / WMV
    "amr",
    "caf",
    "au",
    "wv",
    "avi",
    "mpegts",
)
"""FFmpeg demuxers we open. Anything else — playlists, concat lists, SBG, image sequences — is
refused before its header is parsed."""

MIN_DURATION_S = 0.1
"""Less audio than this holds no word; it is reported as ``empty_audio``."""

TRUNCATION_RATIO = 0.9
"""A file whose decoded length falls this far short of its header's length is reported as
truncated instead of being transcribed in part without anyone noticing."""

_OPEN_OPTIONS = {
    "format_whitelist": ",".join(ALLOWED_FORMATS),
    "protocol_whitelist": "file",
}

Samples = npt.NDArray[np.float32]


@dataclass(frozen=True)
class MediaInfo:
    """What the container says about a file, before decoding."""

    format_name: str
    codec: str
    channels: int
    sample_rate: int
    duration_s: float | None
    size_bytes: int


@dataclass(frozen=True)
class DecodedAudio:
    """16 kHz mono float32 samples and where they came from."""

    samples: Samples
    info: MediaInfo
    decode_errors: int = 0

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def _fmt_duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min {secs:02d} s" if hours else f"{minutes} min {secs:02d} s"


def _wav_header_duration(path: Path) -> float | None:
    """Duration a PCM WAV header claims (FFmpeg clamps it to the file size; we want the claim)."""
    try:
        with wave.open(str(path), "rb") as w:
            return w.getnframes() / w.getframerate() if w.getframerate() else None
    except (wave.Error, EOFError, OSError, ValueError):
        return None


def _container_duration(container: Any, stream: Any) -> float | None:
    if container.duration is not None and container.duration > 0:
        return float(container.duration) / av.time_base
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    return None


def _check_size(path: Path, limits: AudioLimits) -> int:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UnsupportedMedia(f"cannot read {path.name}: {exc.strerror}") from None
    if not path.is_file():
        raise UnsupportedMedia(f"{path.name} is not a regular file")
    if size == 0:
        raise EmptyAudio(f"{path.name} is empty (0 bytes)")
    if size > limits.max_bytes:
        raise TooLarge(
            f"{path.name} is {size:,} bytes; the limit is {limits.max_bytes:,} bytes "
            "(setting audio.max_bytes)"
        )
    return size


def _open(path: Path) -> Any:
    try:
        return av.open(str(path.resolve()), mode="r", options=_OPEN_OPTIONS)
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError):
        raise UnsupportedMedia(
            f"{path.name} is not an audio or video file in an accepted format "
            f"(accepted: {', '.join(ALLOWED_FORMATS)})"
        ) from None


def _inspect(path: Path, container: Any, size: int, limits: AudioLimits) -> tuple[Any, MediaInfo]:
    if not any(name in ALLOWED_FORMATS for name in container.format.name.split(",")):
        raise UnsupportedMedia(f"{path.name}: container format {container.format.name} refused")
    if not container.streams.audio:
        raise UnsupportedMedia(f"{path.name} has no audio track")
    stream = container.streams.audio[0]
    ctx = stream.codec_context
    channels = int(ctx.layout.nb_channels) if ctx.layout is not None else int(ctx.channels or 0)
    info = MediaInfo(
        format_name=container.format.name,
        codec=str(ctx.name),
        channels=channels,
        sample_rate=int(ctx.sample_rate or 0),
        duration_s=_container_duration(container, stream),
        size_bytes=size,
    )
    if info.channels > limits.max_channels:
        raise TooManyChannels(
            f"{path.name} has {info.channels} audio channels; the limit is {limits.max_channels} "
            "(setting audio.max_channels)"
        )
    if info.sample_rate > limits.max_sample_rate:
        raise SampleRateTooHigh(
            f"{path.name} is sampled at {info.sample_rate} Hz; the limit is "
            f"{limits.max_sample_rate} Hz (setting audio.max_sample_rate)"
        )
    claimed = max(
        info.duration_s or 0.0,
        (_wav_header_duration(path) or 0.0) if container.format.name == "wav" else 0.0,
    )
    if claimed > limits.max_duration_s:
        raise TooLong(
            f"{path.name} lasts {_fmt_duration(claimed)} by its header; the limit is "
            f"{_fmt_duration(limits.max_duration_s)} (setting audio.max_duration_s)"
        )
    return stream, info


def probe(path: Path, limits: AudioLimits) -> MediaInfo:
    """Open ``path`` and check its header against ``limits`` without decoding audio."""
    size = _check_size(path, limits)
    container = _open(path)
    try:
        return _inspect(path, container, size, limits)[1]
    finally:
        container.close()


def decode(path: Path, limits: AudioLimits) -> DecodedAudio:
    """Decode ``path`` to 16 kHz mono float32 within ``limits``; raise a typed error otherwise."""
    size = _check_size(path, limits)
    container = _open(path)
    try:
        stream, info = _inspect(path, container, size, limits)
        samples, errors = _decode_stream(path, container, stream, limits)
    finally:
        container.close()
    decoded_s = len(samples) / SAMPLE_RATE
    if decoded_s < MIN_DURATION_S:
        raise EmptyAudio(f"{path.name} holds no audio ({decoded_s:.2f} s could be decoded)")
    if info.duration_s and decoded_s < TRUNCATION_RATIO * info.duration_s - 1.0:
        raise DecodeFailed(
            f"{path.name} is truncated or damaged: its header says {info.duration_s:.1f} s, "
            f"only {decoded_s:.1f} s could be decoded"
        )
    return DecodedAudio(samples=samples, info=info, decode_errors=errors)


def _decode_stream(
    path: Path, container: Any, stream: Any, limits: AudioLimits
) -> tuple[Samples, int]:
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    max_samples = int(limits.max_duration_s * SAMPLE_RATE)
    deadline = time.monotonic() + limits.decode_timeout_s
    chunks: list[Samples] = []
    total = 0
    errors = 0

    def take(frames: list[Any]) -> None:
        nonlocal total
        for out in frames:
            array = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
            chunks.append(array)
            total += len(array)
        if total > max_samples:
            raise TooLong(
                f"{path.name} lasts longer than {_fmt_duration(limits.max_duration_s)} "
                "(setting audio.max_duration_s)"
            )

    try:
        for packet in container.demux(stream):
            if time.monotonic() > deadline:
                raise DecodeTimeout(
                    f"decoding {path.name} took longer than {limits.decode_timeout_s:.0f} s "
                    "(setting audio.decode_timeout_s)"
                )
            try:
                frames = packet.decode()
            except av.InvalidDataError:
                errors += 1  # one damaged packet; FFmpeg resynchronises on the next
                continue
            for frame in frames:
                take(resampler.resample(frame))
        take(resampler.resample(None))
    except (av.FFmpegError, ValueError, MemoryError) as exc:
        if total == 0:
            raise DecodeFailed(f"{path.name} could not be decoded: {type(exc).__name__}") from None
        errors += 1  # demuxing stopped early; the truncation check decides what this means
    if not chunks:
        return np.zeros(0, dtype=np.float32), errors
    return np.concatenate(chunks), errors
