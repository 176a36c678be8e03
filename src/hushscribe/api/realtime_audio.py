"""The audio of ``/v1/realtime``: base64 PCM16 checked, 24 kHz resampled to Whisper's 16 kHz (in
numpy: the API process never loads FFmpeg), and the stream recorded to the blob store as it
arrives, to become a job when the client stops."""

from __future__ import annotations

import asyncio
import base64
import binascii
import struct
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from hushscribe.api.realtime_events import ClientError
from hushscribe.errors import HushscribeError
from hushscribe.jobs.blobs import Blob, BlobStore, BlobWriter

STREAM_RATE: Final = 16_000
"""What the workers decode: Whisper's rate."""
FLUSH_BYTES: Final = 64 * 1024
"""Recorded audio gathered before a write (2 s at 16 kHz): one trip to a thread per 2 s."""
COPY_BYTES: Final = 1 << 20


def decode_append(event: dict[str, Any]) -> bytes:
    """The PCM16LE bytes of an ``input_audio_buffer.append``."""
    audio = event.get("audio")
    if not isinstance(audio, str):
        raise ClientError("invalid_value", "'audio' must be base64 text", param="audio")
    try:
        pcm = base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError):
        raise ClientError("invalid_base64", "'audio' is not valid base64", param="audio") from None
    if len(pcm) % 2:
        raise ClientError(
            "invalid_audio", f"{len(pcm)} bytes is no whole number of PCM16 samples", param="audio"
        )
    return pcm


def _lowpass(half_taps: int = 128, cutoff_hz: float = 7_500.0, rate: int = 48_000) -> Any:
    """The anti-aliasing filter of 24 → 16 kHz, at the rate between them (48 kHz: up 2, down 3),
    split in its two phases. Kaiser window, β = 8 (about 80 dB down from 8 kHz, where 16 kHz
    folds); gain 2 (the zeros put in by upsampling)."""
    n = np.arange(2 * half_taps - 1) - (half_taps - 1)
    ideal = 2 * (2 * cutoff_hz / rate) * np.sinc(2 * cutoff_hz / rate * n)
    taps = ideal * np.kaiser(len(n), 8.0)
    return taps[0::2], taps[1::2]


_EVEN, _ODD = _lowpass()
_DELAY: Final = len(_EVEN) - 1
"""The filter's delay at 48 kHz (half its length), taken back so that output and input line up."""


class Resampler:
    """PCM16 mono at 24 or 16 kHz → PCM16 mono 16 kHz, its state kept across frames (so the
    framing changes nothing). Output sample m is the filtered signal at input position 1.5·m:
    even m on the input's samples, odd m half-way between them."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._history: npt.NDArray[np.float64] = np.zeros(0)
        self._base = 0  # the input index of _history[0]
        self._next = 0  # the next output sample

    def __call__(self, pcm: bytes) -> bytes:
        if self.rate == STREAM_RATE or not pcm:
            return pcm
        return self._run(np.frombuffer(pcm, dtype="<i2"), None)

    def _run(self, samples: npt.NDArray[np.int16], until: int | None) -> bytes:
        x = np.concatenate([self._history, samples])
        total = self._base + len(x)
        end = max(self._next, (2 * total - 1 - _DELAY) // 3 + 1)  # those whose input has come
        outputs = np.arange(self._next, end if until is None else min(end, until))
        at = 3 * outputs + _DELAY  # positions at 48 kHz
        even, odd = np.convolve(x, _EVEN), np.convolve(x, _ODD)
        index = at // 2 - self._base
        y = np.where(at % 2 == 0, even[index], odd[index])
        keep = min(len(x), len(_EVEN) - 1)
        self._history, self._base = x[len(x) - keep :], total - keep
        self._next += len(outputs)
        return np.clip(np.rint(y), -32768, 32767).astype("<i2").tobytes()

    def flush(self) -> bytes:
        """The last few milliseconds the filter holds back: at the end, or before a rate change.
        After it, 2/3 as many samples came out as went in."""
        if self.rate == STREAM_RATE:
            return b""
        given = self._base + len(self._history)
        tail = np.zeros(len(_EVEN), dtype=np.int16)
        return self._run(tail, (2 * given + 2) // 3)


def wav_header(data_bytes: int, rate: int = STREAM_RATE) -> bytes:
    """A 44-byte header of PCM16 mono WAV with ``data_bytes`` of samples."""
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + data_bytes, b"WAVE", b"fmt ", 16, 1, 1, rate,
        rate * 2, 2, 16, b"data", data_bytes,
    )  # fmt: skip


class Recording:
    """A stream's 16 kHz audio in the blob store, written as it arrives (a few seconds held in
    memory at most): raw samples first, then, on :meth:`save`, a WAV — the header needs the
    length. Past ``max_bytes`` (what a job may hold) the rest is not kept; a full disk stops the
    recording (``failed``), not the captions."""

    def __init__(self, blobs: BlobStore, max_bytes: int) -> None:
        self.blobs = blobs
        self.max_bytes = max_bytes
        self.size = 0
        self.truncated = False
        self.failed: HushscribeError | None = None
        self._raw: BlobWriter = blobs.writer(max_bytes)
        self._pending = bytearray()

    async def write(self, pcm: bytes) -> None:
        room = self.max_bytes - self.size
        if len(pcm) > room:
            pcm, self.truncated = pcm[: room - room % 2], True
        if self.failed is not None:
            return
        self.size += len(pcm)
        self._pending += pcm
        if len(self._pending) >= FLUSH_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        data = bytes(self._pending)
        self._pending.clear()
        if data and self.failed is None:
            try:
                await asyncio.to_thread(self._raw.write, data)
            except HushscribeError as exc:  # a full disk: the writer deleted the file
                self.failed = exc

    async def save(self) -> Blob:
        """The recording as a WAV blob (the raw file removed); the error that stopped it, if
        one did."""
        await self._flush()
        if self.failed is not None:
            raise self.failed
        raw = await asyncio.to_thread(self._raw.commit)
        try:
            return await asyncio.to_thread(self._as_wav, raw)
        finally:
            self.blobs.delete(raw.path)

    def _as_wav(self, raw: Blob) -> Blob:
        with self.blobs.writer(raw.size + 44) as wav, raw.path.open("rb") as fh:
            wav.write(wav_header(raw.size))
            while chunk := fh.read(COPY_BYTES):
                wav.write(chunk)
            return wav.commit()

    def abort(self) -> None:
        """Delete what was written (the client went away: nothing is kept)."""
        self._pending.clear()
        self._raw.abort()
