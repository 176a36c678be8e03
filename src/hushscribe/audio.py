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

import dataclasses
import time
import wave
from collections.abc import Iterator
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


def _check_size(path: Path, limits: AudioLimits, name: str) -> int:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UnsupportedMedia(f"cannot read {name}: {exc.strerror}") from None
    if not path.is_file():
        raise UnsupportedMedia(f"{name} is not a regular file")
    if size == 0:
        raise EmptyAudio(f"{name} is empty (0 bytes)")
    if size > limits.max_bytes:
        raise TooLarge(
            f"{name} is {size:,} bytes; the limit is {limits.max_bytes:,} bytes "
            "(setting audio.max_bytes)"
        )
    return size


def _open(path: Path, name: str) -> Any:
    try:
        return av.open(str(path.resolve()), mode="r", options=_OPEN_OPTIONS)
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError):
        raise UnsupportedMedia(
            f"{name} is not an audio or video file in an accepted format "
            f"(accepted: {', '.join(ALLOWED_FORMATS)})"
        ) from None


def _inspect(
    name: str, path: Path, container: Any, size: int, limits: AudioLimits
) -> tuple[Any, MediaInfo]:
    if not any(fmt in ALLOWED_FORMATS for fmt in container.format.name.split(",")):
        raise UnsupportedMedia(f"{name}: container format {container.format.name} refused")
    if not container.streams.audio:
        raise UnsupportedMedia(f"{name} has no audio track")
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
            f"{name} has {info.channels} audio channels; the limit is {limits.max_channels} "
            "(setting audio.max_channels)"
        )
    if info.sample_rate > limits.max_sample_rate:
        raise SampleRateTooHigh(
            f"{name} is sampled at {info.sample_rate} Hz; the limit is "
            f"{limits.max_sample_rate} Hz (setting audio.max_sample_rate)"
        )
    claimed = max(
        info.duration_s or 0.0,
        (_wav_header_duration(path) or 0.0) if container.format.name == "wav" else 0.0,
    )
    if claimed > (info.duration_s or 0.0):  # a WAV cut short: FFmpeg clamps to what is there
        info = dataclasses.replace(info, duration_s=claimed)
    if claimed > limits.max_duration_s:
        raise TooLong(
            f"{name} lasts {_fmt_duration(claimed)} by its header; the limit is "
            f"{_fmt_duration(limits.max_duration_s)} (setting audio.max_duration_s)"
        )
    return stream, info


def probe(path: Path, limits: AudioLimits, name: str | None = None) -> MediaInfo:
    """Open ``path`` and check its header against ``limits`` without decoding audio."""
    with AudioReader(path, limits, name) as reader:
        return reader.info


class AudioReader:
    """An opened, checked media file whose audio is decoded block by block.

    Memory stays bounded by the block size whatever the file's length: a 4 h meeting is read as
    a few minutes at a time. ``name`` is what error messages call the file (the name the client
    uploaded; the path's own name otherwise). The samples are exactly those of
    ``faster_whisper.decode_audio`` (FFmpeg's resampler to 16-bit mono, then scaled to float):
    the level Whisper was trained on. A float resampler would mix stereo to mono √2 too loud.
    """

    def __init__(self, path: Path, limits: AudioLimits, name: str | None = None) -> None:
        self.path, self.limits, self.name = path, limits, name or path.name
        size = _check_size(path, limits, self.name)
        self._container = _open(path, self.name)
        try:
            self._stream, self.info = _inspect(self.name, path, self._container, size, limits)
        except BaseException:
            self._container.close()
            raise
        self.decoded_samples = 0
        self.decode_errors = 0
        self.decode_seconds = 0.0
        """Wall-clock time spent decoding so far (checked against ``decode_timeout_s``)."""

    def __enter__(self) -> AudioReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    def blocks(self, block_samples: int) -> Iterator[Samples]:
        """Decoded audio in blocks of about ``block_samples`` (the last may be shorter).

        After the last block the length is checked: too little audio is ``empty_audio``, a file
        decoding to much less than its header claims is ``decode_failed`` (truncated)."""
        name, limits = self.name, self.limits
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        max_samples = int(limits.max_duration_s * SAMPLE_RATE)
        pending: list[Samples] = []
        held = 0

        def take(frames: list[Any]) -> None:
            nonlocal held
            for out in frames:
                array = out.to_ndarray().reshape(-1).astype(np.float32) / np.float32(32768.0)
                pending.append(array)
                held += len(array)
                self.decoded_samples += len(array)
            if self.decoded_samples > max_samples:
                raise TooLong(
                    f"{name} lasts longer than {_fmt_duration(limits.max_duration_s)} "
                    "(setting audio.max_duration_s)"
                )

        def flush() -> Samples:
            nonlocal held
            block = np.concatenate(pending) if len(pending) > 1 else pending[0]
            pending.clear()
            held = 0
            return block

        packets = self._container.demux(self._stream)
        while True:
            started = time.monotonic()
            try:
                packet = next(packets, None)
                if packet is None:
                    take(resampler.resample(None))
                    break
                try:
                    for frame in packet.decode():
                        take(resampler.resample(frame))
                except av.InvalidDataError:
                    self.decode_errors += 1  # one damaged packet; FFmpeg resynchronises
            except (av.FFmpegError, ValueError, MemoryError) as exc:
                if self.decoded_samples == 0:
                    raise DecodeFailed(
                        f"{name} could not be decoded: {type(exc).__name__}"
                    ) from None
                self.decode_errors += 1  # demuxing stopped early; the length check decides
                break
            finally:
                self.decode_seconds += time.monotonic() - started
            if self.decode_seconds > limits.decode_timeout_s:
                raise DecodeTimeout(
                    f"decoding {name} took longer than {limits.decode_timeout_s:.0f} s "
                    "(setting audio.decode_timeout_s)"
                )
            if held >= block_samples:
                yield flush()
        self._check_length()
        if pending:
            yield flush()

    def _check_length(self) -> None:
        decoded_s = self.decoded_samples / SAMPLE_RATE
        if decoded_s < MIN_DURATION_S:
            raise EmptyAudio(f"{self.name} holds no audio ({decoded_s:.2f} s could be decoded)")
        claimed = self.info.duration_s
        if claimed and decoded_s < TRUNCATION_RATIO * claimed - 1.0:
            raise DecodeFailed(
                f"{self.name} is truncated or damaged: its header says {claimed:.1f} s, "
                f"only {decoded_s:.1f} s could be decoded"
            )


def decode(path: Path, limits: AudioLimits, name: str | None = None) -> DecodedAudio:
    """Decode all of ``path`` to 16 kHz mono float32 within ``limits``; raise a typed error
    otherwise. For long files prefer :class:`AudioReader`, which holds one block at a time."""
    with AudioReader(path, limits, name) as reader:
        blocks = list(reader.blocks(max(1, int(limits.max_duration_s * SAMPLE_RATE))))
        samples = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
        return DecodedAudio(samples=samples, info=reader.info, decode_errors=reader.decode_errors)
