"""Long recordings built from the real English clips in ../shared/speech, and how to score them.

A long file is real clips laid end to end with ``gap_s`` of silence between them (``dense``), or
one clip every ``every_s`` seconds with silence in between (``sparse``: an hours-long file that is
small as FLAC and quick to transcribe). The order is repeatable: every round of clips is the
manifest's English clips shuffled with ``random.Random(round)``. The reference is the clips'
references joined the same way. Files are written as 16 kHz mono FLAC with PyAV, a chunk at a
time, so a 4 h file never sits in memory whole.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import av
import numpy as np
from faster_whisper import decode_audio
from tests.speech import Clip, clips, error_rate, normalise

RATE = 16_000
START_WORDS = 4  # a clip counts as found when its reference's first words are in the transcript


def english() -> list[Clip]:
    return [c for c in clips() if c.language == "en"]


@cache
def samples(path: Path) -> np.ndarray:
    """A clip decoded to 16 kHz mono float32 (faster-whisper's own decoder, PyAV)."""
    return decode_audio(str(path), sampling_rate=RATE)


def clip_order(pool: list[Clip]) -> Iterator[Clip]:
    """The pool shuffled with seed 0, then seed 1, ... for ever: a repeatable order."""
    round_ = 0
    while True:
        order = list(pool)
        random.Random(round_).shuffle(order)
        yield from order
        round_ += 1


@dataclass
class LongFile:
    path: Path
    seconds: float
    placed: list[Clip]  # in the order they are heard
    kind: str  # "dense" or "sparse"

    @property
    def reference(self) -> str:
        return " ".join(c.reference for c in self.placed)

    @property
    def speech_seconds(self) -> float:
        return sum(len(samples(c.path)) for c in self.placed) / RATE


def write_flac(path: Path, chunks: Iterable[np.ndarray]) -> float:
    """Float32 chunks (−1..1) → 16 kHz mono 16-bit FLAC; returns the seconds written."""
    written = 0
    with av.open(str(path), "w", format="flac") as out:
        stream = out.add_stream("flac", rate=RATE, layout="mono")
        stream.format = "s16"
        for chunk in chunks:
            if not len(chunk):
                continue
            pcm = (np.clip(chunk, -1, 1) * 32767).astype("<i2")
            frame = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
            frame.rate = RATE
            frame.pts = written
            written += len(pcm)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return written / RATE


def dense(path: Path, min_seconds: float, gap_s: float = 1.0) -> LongFile:
    """English clips with ``gap_s`` silences, repeated until at least ``min_seconds`` (whole
    clips only, so the reference is exact)."""
    placed: list[Clip] = []
    total = 0.0
    order = clip_order(english())
    while total < min_seconds:
        c = next(order)
        placed.append(c)
        total += len(samples(c.path)) / RATE + (gap_s if len(placed) > 1 else 0.0)
    gap = np.zeros(int(gap_s * RATE), np.float32)

    def chunks() -> Iterator[np.ndarray]:
        for i, c in enumerate(placed):
            if i:
                yield gap
            yield samples(c.path)

    return LongFile(path, write_flac(path, chunks()), placed, "dense")


def sparse(path: Path, seconds: float, every_s: float = 600.0) -> LongFile:
    """``seconds`` of silence with one English clip at 0, ``every_s``, 2 x ``every_s``, ..."""
    placed: list[Clip] = []
    order = clip_order(english())
    starts = np.arange(0.0, seconds, every_s)
    for start in starts:
        c = next(order)
        if start + len(samples(c.path)) / RATE > seconds:
            break
        placed.append(c)

    def chunks() -> Iterator[np.ndarray]:
        block = int(60 * RATE)  # silence a minute at a time
        at = 0
        end = int(seconds * RATE)
        marks = {int(s * RATE): c for s, c in zip(starts, placed, strict=False)}
        for mark in [*sorted(marks), end]:
            while at < mark:
                n = min(block, mark - at)
                yield np.zeros(n, np.float32)
                at += n
            if mark in marks:
                speech = samples(marks[mark].path)
                yield speech
                at += len(speech)

    return LongFile(path, write_flac(path, chunks()), placed, "sparse")


def words(text: str) -> list[str]:
    return normalise(text, "en").split()


def spans(tokens: list[str], gram: tuple[str, ...], exact: bool = False) -> int:
    """Places ``gram`` occurs in ``tokens``, not overlapping. Unless ``exact``, one of its words
    may differ (the model heard "golden ring" for "gold ring") or be missing (a reading's "One"
    dropped between two clips)."""
    n = len(gram)
    found: list[tuple[int, int]] = []
    for i in range(len(tokens) - n + 1):
        if sum(a != b for a, b in zip(tokens[i : i + n], gram, strict=True)) <= (0 if exact else 1):
            found.append((i, i + n))
    if not exact and n > 1:
        for k in range(n):
            short = gram[:k] + gram[k + 1 :]
            for i in range(len(tokens) - n + 2):
                if tuple(tokens[i : i + n - 1]) == short:
                    found.append((i, i + n - 1))
    end, places = -1, 0
    for a, b in sorted(found, key=lambda s: s[1]):  # most non-overlapping spans, greedily
        if a >= end:
            places, end = places + 1, b
    return places


def coverage(placed: list[Clip], transcript: str, exact: bool = False) -> tuple[int, list[str]]:
    """How many of the placed clips have their first normalised words in ``transcript``.

    A clip heard k times needs its opening words k times (more, when the same words also occur
    inside the clips' references elsewhere). Unless ``exact``, one of the words may differ or be
    missing (see :func:`spans`). Returns (found, names of the clips missed).
    """
    hyp = words(transcript)
    refs = {c.path: words(c.reference) for c in placed}
    starts = Counter(tuple(refs[c.path][:START_WORDS]) for c in placed)
    found, missed = 0, []
    for gram, placements in starts.items():
        elsewhere = sum(spans(refs[c.path], gram, exact) for c in placed) - placements
        lost = min(placements, max(0, placements + elsewhere - spans(hyp, gram, exact)))
        found += placements - lost
        if lost:
            names = sorted(
                {c.path.name for c in placed if refs[c.path][:START_WORDS] == list(gram)}
            )
            missed += [f"{'/'.join(names)} x{lost}"]
    return found, missed


def wer(reference: str, hypothesis: str) -> float:
    return round(error_rate([reference], [hypothesis], "en"), 4)


def contains(text: str, phrase: str) -> bool:
    """``phrase`` in ``text``, both normalised, whole words."""
    return f" {' '.join(words(phrase))} " in f" {' '.join(words(text))} "
