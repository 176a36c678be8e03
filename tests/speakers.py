"""What the diarization tests over HTTP and in the browser share: two LibriSpeech readers one
after the other and the first again (A, B, A: speaker 1089, speaker 61, then 1089 from another
chapter), written as a WAV file, and a server whose models folder links the Whisper models."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from hushscribe.audio import SAMPLE_RATE, AudioReader
from hushscribe.settings import AudioLimits
from tests.service import Service
from tests.speech import clip

PARTS = ("1089-134686-0000.flac", "61-70968-0000.flac", "1089-134691-0001.flac")
GAP_S = 0.6


def write_readers(path: Path, channels: int = 1) -> Path:
    """The A, B, A conversation with GAP_S of silence after each part, as 16-bit WAV; with two
    channels, the right one 6 dB quieter (as a room's second microphone)."""
    gap = np.zeros(int(GAP_S * SAMPLE_RATE), dtype=np.float32)
    pieces: list[np.ndarray] = []
    for name in PARTS:
        with AudioReader(clip(name).path, AudioLimits()) as reader:
            pieces.extend([*reader.blocks(30 * SAMPLE_RATE), gap])
    mono = np.concatenate(pieces)
    both = np.stack([mono, mono * 0.5], axis=1)[:, :channels]  # interleaved frames
    pcm = (np.clip(both, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm.tobytes())
    return path


def whisper_service(root: Path, data_dir: Path) -> Service:
    """A server (not started) on ``root`` whose models folder links tiny.en and base from the
    test models in ``data_dir``; tiny.en is its default; two workers and 30 s leases, as a user
    gets them. No speaker model yet."""
    models = root / "models"
    models.mkdir()
    for name in ("tiny.en", "base"):
        (models / name).symlink_to(data_dir / "models" / name, target_is_directory=True)
    defaults = {"HUSHSCRIBE_JOBS__WORKERS": "2", "HUSHSCRIBE_JOBS__LEASE_S": "30"}
    return Service(root, env={"HUSHSCRIBE_ENGINE__DEFAULT_MODEL": "tiny.en", **defaults})
