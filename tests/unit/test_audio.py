"""hushscribe.audio on real speech in many formats and on hostile files, written at test time."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from hushscribe import audio
from hushscribe.errors import (
    DecodeFailed,
    DecodeTimeout,
    EmptyAudio,
    MediaError,
    SampleRateTooHigh,
    TooLarge,
    TooLong,
    TooManyChannels,
    UnsupportedMedia,
)
from hushscribe.settings import AudioLimits
from tests import media

DEFAULT = AudioLimits()


def _envelope(samples: np.ndarray, window: int = 1600) -> np.ndarray:
    """RMS per 100 ms at 16 kHz: where the words are, robust to codec delay and phase."""
    usable = len(samples) // window * window
    return np.sqrt((samples[:usable].reshape(-1, window) ** 2).mean(axis=1))


# --- good media --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", media.FORMATS, ids=[f.name for f in media.FORMATS])
def test_decodes_real_speech(tmp_path: Path, fmt: media.Format) -> None:
    source = media.jfk_samples()
    try:
        path = fmt.write(tmp_path, source)
    except LookupError as exc:
        pytest.skip(str(exc))

    decoded = audio.decode(path, DEFAULT)

    assert decoded.samples.dtype == np.float32
    assert decoded.samples.ndim == 1
    assert decoded.duration_s == pytest.approx(media.JFK_SECONDS, abs=0.3)
    assert decoded.info.size_bytes == path.stat().st_size
    assert decoded.info.channels == (2 if fmt.layout == "stereo" else 1)
    assert decoded.decode_errors == 0
    # The same speech came back, not silence or noise of the right length.
    n = min(len(source), len(decoded.samples))
    got, want = _envelope(decoded.samples[:n]), _envelope(source[:n])
    assert np.corrcoef(got, want)[0, 1] > 0.95
    rms_ratio = np.sqrt(np.mean(decoded.samples**2)) / np.sqrt(np.mean(source**2))
    # The test encoder spreads mono to stereo at -3 dB a channel (FFmpeg's upmix); Whisper's own
    # decoder averages the channels back, so a stereo file reads 1/sqrt(2) of the source level.
    level = 1 / np.sqrt(2) if fmt.layout == "stereo" else 1.0
    assert 0.8 * level < rms_ratio < 1.25 * level
    if fmt.name in ("wav", "flac"):  # lossless: equal up to 16-bit quantisation
        assert np.abs(decoded.samples[:n] - np.clip(source[:n], -1, 1)).max() < 1e-3


def test_mp4_with_video_track_decodes_its_audio(tmp_path: Path) -> None:
    fmt = next(f for f in media.FORMATS if f.video)
    if media.video_encoder() is None:
        pytest.skip("this PyAV has no video encoder")
    path = fmt.write(tmp_path, media.jfk_samples())

    decoded = audio.decode(path, DEFAULT)

    assert "mp4" in decoded.info.format_name
    assert decoded.info.codec == "aac"
    assert decoded.info.sample_rate == 48_000


def test_probe_reports_stereo_44k_wav(tmp_path: Path) -> None:
    path = media.write_wav(tmp_path / "stereo.wav", media.sine(2.0, 44_100), 44_100, channels=2)

    info = audio.probe(path, DEFAULT)

    assert (info.format_name, info.codec, info.channels, info.sample_rate) == (
        "wav",
        "pcm_s16le",
        2,
        44_100,
    )
    assert info.duration_s == pytest.approx(2.0, abs=0.01)
    assert info.size_bytes == path.stat().st_size == 44 + 2 * 2 * 88_200


def test_probe_checks_limits_without_decoding(tmp_path: Path) -> None:
    path = media.write_wav(tmp_path / "many.wav", media.sine(0.2, 192_000), 192_000, channels=12)

    with pytest.raises(TooManyChannels):
        audio.probe(path, DEFAULT)


# --- hostile media -----------------------------------------------------------------------------

Build = Callable[[Path], Path]


def _empty(d: Path) -> Path:
    (d / "empty.wav").write_bytes(b"")
    return d / "empty.wav"


def _text(d: Path) -> Path:
    (d / "notes.txt").write_text("not audio at all\n" * 200, encoding="utf-8")
    return d / "notes.txt"


def _directory(d: Path) -> Path:
    (d / "folder.wav").mkdir()
    return d / "folder.wav"


def _video_only(container: str, suffix: str) -> Build:
    def build(d: Path) -> Path:
        codec = media.video_encoder()
        if codec is None:
            pytest.skip("this PyAV has no video encoder")
        return media.write_video_only(d / f"video_only{suffix}", container, codec)

    return build


def _mp3_third(d: Path) -> Path:
    return media.write_prefix(d / "third.mp3", media.LONG_MP3, media.LONG_MP3.stat().st_size // 3)


# name: (build, limits, error, fragment of the message besides the file name)
HOSTILE: dict[str, tuple[Build, AudioLimits, type[MediaError], str]] = {
    "empty": (_empty, DEFAULT, EmptyAudio, "0 bytes"),
    "random_bytes": (
        lambda d: media.write_random(d / "random.wav"),
        DEFAULT,
        UnsupportedMedia,
        "accepted format",
    ),
    "text": (_text, DEFAULT, UnsupportedMedia, "accepted format"),
    "directory": (_directory, DEFAULT, UnsupportedMedia, "not a regular file"),
    "missing": (lambda d: d / "missing.wav", DEFAULT, UnsupportedMedia, "cannot read"),
    "hls_playlist": (
        lambda d: media.write_hls(d / "list.m3u8", d / "absent.wav"),
        DEFAULT,
        UnsupportedMedia,
        "accepted format",
    ),
    "ffconcat": (
        lambda d: media.write_ffconcat(d / "list.ffconcat", d / "absent.wav"),
        DEFAULT,
        UnsupportedMedia,
        "accepted format",
    ),
    "wav_claims_24h": (
        lambda d: media.write_lying_wav(d / "lying.wav", claimed_s=24 * 3600, actual_s=1.0),
        DEFAULT,
        TooLong,
        "24 h 00 min 00 s by its header",
    ),
    "12ch_192k": (
        lambda d: media.write_wav(d / "12ch.wav", media.sine(0.3, 192_000), 192_000, 12),
        DEFAULT,
        TooManyChannels,
        "12 audio channels",
    ),
    "12ch_192k_channels_allowed": (
        lambda d: media.write_wav(d / "12ch.wav", media.sine(0.3, 192_000), 192_000, 12),
        AudioLimits(max_channels=12),
        SampleRateTooHigh,
        "192000 Hz",
    ),
    "over_byte_cap": (
        lambda d: media.write_wav(d / "big.wav", media.sine(1.0)),
        AudioLimits(max_bytes=1000),
        TooLarge,
        "32,044 bytes; the limit is 1,000 bytes",
    ),
    "mp4_video_only": (_video_only("mp4", ".mp4"), DEFAULT, UnsupportedMedia, "no audio track"),
    "mkv_video_only": (
        _video_only("matroska", ".mkv"),
        DEFAULT,
        UnsupportedMedia,
        "no audio track",
    ),
    # 700 bytes hold the ID3 tag and a frame or two: 0.05 s decode, which is no audio.
    "mp3_first_700_bytes": (
        lambda d: media.write_prefix(d / "head.mp3", media.LONG_MP3, 700),
        DEFAULT,
        EmptyAudio,
        "holds no audio",
    ),
    "mp3_cut_at_one_third": (_mp3_third, DEFAULT, DecodeFailed, "truncated"),
    "wav_3s_over_1s_cap": (
        lambda d: media.write_wav(d / "three.wav", media.sine(3.0)),
        AudioLimits(max_duration_s=1),
        TooLong,
        "0 min 03 s by its header",
    ),
    "decode_timeout": (
        lambda d: media.write_wav(d / "slow.wav", media.sine(3.0)),
        AudioLimits(decode_timeout_s=1e-9),
        DecodeTimeout,
        "took longer than",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_media_raise_typed_errors(tmp_path: Path, case: str) -> None:
    build, limits, error, fragment = HOSTILE[case]
    path = build(tmp_path)

    with pytest.raises(MediaError) as info:
        audio.decode(path, limits)

    assert type(info.value) is error
    assert info.value.code == error.code
    assert path.name in info.value.message
    assert fragment in info.value.message
    assert "Traceback" not in info.value.message


def test_duration_cap_is_enforced_while_decoding(tmp_path: Path) -> None:
    """A stream whose header gives no duration cannot pass the cap: decoding stops at it."""
    path = media.encode(
        tmp_path / "live.mkv",
        media.sine(3.0),
        16_000,
        "flac",
        "matroska",
        container_options={"live": "1"},
    )
    assert audio.probe(path, AudioLimits(max_duration_s=1)).duration_s is None
    assert audio.decode(path, DEFAULT).duration_s == pytest.approx(3.0, abs=0.01)

    with pytest.raises(TooLong) as info:
        audio.decode(path, AudioLimits(max_duration_s=1))

    assert info.value.code == "too_long"
    assert info.value.message == (
        "live.mkv lasts longer than 0 min 01 s (setting audio.max_duration_s)"
    )


@pytest.mark.parametrize(
    ("name", "write"),
    [("list.m3u8", media.write_hls), ("list.ffconcat", media.write_ffconcat)],
)
def test_playlists_do_not_open_the_files_they_name(
    tmp_path: Path, name: str, write: Callable[[Path, Path], Path]
) -> None:
    """The playlist names a FIFO. A reader opening it would show up to a non-blocking writer;
    the watcher then closes its end so a wrongly opened reader sees EOF instead of hanging."""
    fifo = tmp_path / "segment.wav"
    os.mkfifo(fifo)
    path = write(tmp_path / name, fifo)
    done = threading.Event()
    opened: list[bool] = []

    def watch() -> None:
        while not done.is_set():
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: nobody has the FIFO open for reading
                done.wait(0.005)
                continue
            opened.append(True)
            os.close(fd)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with pytest.raises(UnsupportedMedia) as info:
            audio.decode(path, DEFAULT)
    finally:
        done.set()
        watcher.join(timeout=5)

    assert opened == []
    assert info.value.message.startswith(f"{name} is not an audio or video file")


def test_hostile_media_leave_no_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    good = media.write_wav(inputs / "good.wav", media.sine(1.0))
    written = {good}
    for case, (build, limits, _error, _fragment) in HOSTILE.items():
        case_dir = inputs / case
        case_dir.mkdir()
        try:
            path = build(case_dir)
        except pytest.skip.Exception:
            continue
        written |= set(case_dir.rglob("*"))
        with pytest.raises(MediaError):
            audio.decode(path, limits)

    assert audio.decode(good, DEFAULT).duration_s == pytest.approx(1.0)
    assert list(scratch.iterdir()) == []
    case_dirs = {inputs / case for case in HOSTILE}
    assert set(tmp_path.rglob("*")) == {scratch, inputs} | case_dirs | written
