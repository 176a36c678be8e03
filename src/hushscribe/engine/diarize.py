"""Who spoke when: speaker turns from speech regions, and speakers on a transcript.

``diarize``: sliding windows (1.5 s, hop 0.75 s) inside the speech regions (those given, or,
as the worker asks, Silero VAD's with settings for turns: ``speech_regions``), a CAM++ embedding
per window (a batch at a time: only the embeddings are kept, 4 h of speech ≈ 19 k × 192 floats ≈
15 MB), spectral clustering (engine/clustering.py; stricter about merging voices in a noisy
recording: ``merge_threshold``), then turns. Each window speaks for the stretch nearer its
centre than its neighbours'; where the speaker changes between two windows, the boundary goes to
the quietest 100 ms between their centres (people rarely talk over each other's first syllable,
so a turn change usually has a dip in level). Turns of one speaker that touch are merged;
speakers are numbered in order of first appearance.

``label_transcript``: every word takes the speaker whose turns overlap it most (the nearest turn
if none does); a segment whose words change speaker is split there; a segment without words takes
its majority speaker. Speakers are named "Speaker 1", "Speaker 2"… in order of first appearance
in the transcript.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hushscribe.engine.clustering import MERGE_CLEAN, MERGE_NOISY, cluster
from hushscribe.transcript import Segment, Speaker, Transcript, Word

if TYPE_CHECKING:
    from hushscribe.engine.speaker_model import SpeakerEncoder

SAMPLE_RATE = 16_000
WINDOW_S = 1.5
"""Long enough for a stable voice embedding, short enough that most windows hold one speaker."""
HOP_S = 0.75
"""Windows overlap by half: a turn as short as 1 s still gets a window of its own."""
MIN_REGION_S = 0.3
"""Speech regions shorter than this (a click, a breath) are left out of the windows; they take
the speaker of the nearest turn in ``label_transcript`` if a word falls there."""
BATCH = 64
"""Windows embedded per call: bounds the audio copied at once (64 × 1.5 s ≈ 6 MB)."""
QUIET_FRAME_S = 0.1
"""The level dip a boundary snaps to is measured over this long."""
VAD_MIN_SILENCE_MS = 300
"""Without the transcription's regions, Silero VAD splits speech at pauses this long: turns
often change at a short pause, and a region boundary there is a turn boundary for free."""
VAD_THRESHOLD = 0.25
VAD_PAD_MS = 200
"""Threshold and padding measured on the benchmark's conversations (bench/diarization.py): at
0.5 and 100 ms, VAD missed 2 % of the speech when clean and 12 % over a noisy phone line; at
0.25 and 200 ms, 0.1 % and 2 %, for 0.1–0.9 % false alarm."""
VAD_BLOCK_S = 120
"""VAD runs over 2 min at a time: it copies its input several times (a 10-min block took 89 MiB
at peak, a 2-min one 17 MiB); a region cut by a block's edge is joined again."""
NOISY_DB = 24.0
CLEAN_DB = 32.0
"""The level spread (loud frames over quiet ones, ``level_spread_db``) at or below which a
recording counts as noisy and the clusters need MERGE_NOISY to join, and at or above which it
counts as clean (MERGE_CLEAN); in between the threshold is interpolated. The benchmark's
telephone conversations with noise at 15 dB SNR spread 20–24 dB; LibriSpeech readings ~35 dB."""


@dataclass(frozen=True)
class DiarizeOptions:
    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None


@dataclass(frozen=True)
class Turn:
    start: float
    end: float
    speaker: int
    """0..k-1 in order of first appearance."""


@dataclass(frozen=True)
class _Window:
    region: int
    start: int  # samples
    end: int


def speech_regions(samples: np.ndarray) -> list[tuple[float, float]]:
    """Silero VAD's speech regions in seconds (faster-whisper's copy of the model), found
    VAD_BLOCK_S at a time: the VAD copies its input several times, 4 h at once would be GBs."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    vad = VadOptions(
        threshold=VAD_THRESHOLD,
        min_silence_duration_ms=VAD_MIN_SILENCE_MS,
        speech_pad_ms=VAD_PAD_MS,
    )
    block = VAD_BLOCK_S * SAMPLE_RATE
    pad = VAD_PAD_MS / 1000
    regions: list[tuple[float, float]] = []
    for offset in range(0, len(samples), block):
        piece = np.asarray(samples[offset : offset + block], dtype=np.float32)
        edge = offset / SAMPLE_RATE
        for c in get_speech_timestamps(piece, vad):
            start, end = edge + c["start"] / SAMPLE_RATE, edge + c["end"] / SAMPLE_RATE
            if offset and regions and regions[-1][1] >= edge - pad and start <= edge + pad:
                regions[-1] = (regions[-1][0], end)  # one region cut by the block's edge
            else:
                regions.append((start, end))
    return regions


def _clean_regions(regions: list[tuple[float, float]], n_samples: int) -> list[tuple[int, int]]:
    """Regions in samples, clipped to the audio, sorted, overlaps joined, specks dropped."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(regions):
        a = max(0, round(start * SAMPLE_RATE))
        b = min(n_samples, round(end * SAMPLE_RATE))
        if b <= a:
            continue
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return [(a, b) for a, b in out if b - a >= MIN_REGION_S * SAMPLE_RATE]


def _windows(regions: list[tuple[int, int]]) -> list[_Window]:
    """Windows over each region: evenly spaced, the last one flush with the region's end."""
    size, hop = round(WINDOW_S * SAMPLE_RATE), round(HOP_S * SAMPLE_RATE)
    out: list[_Window] = []
    for r, (a, b) in enumerate(regions):
        if b - a <= size:
            out.append(_Window(r, a, b))
            continue
        count = -(-(b - a - size) // hop) + 1
        starts = np.linspace(a, b - size, count).round().astype(int)
        out.extend(_Window(r, int(s), int(s) + size) for s in starts)
    return out


def _embed(encoder: SpeakerEncoder, samples: np.ndarray, windows: list[_Window]) -> np.ndarray:
    """Embeddings of every window, BATCH windows at a time (only the vectors are kept)."""
    out: np.ndarray | None = None
    for i in range(0, len(windows), BATCH):
        batch = windows[i : i + BATCH]
        emb = encoder.embed([samples[w.start : w.end] for w in batch])
        if out is None:
            out = np.zeros((len(windows), emb.shape[1]), dtype=np.float32)
        out[i : i + len(batch)] = emb
    assert out is not None
    return out


def diarize(
    encoder: SpeakerEncoder,
    samples: np.ndarray,
    speech: list[tuple[float, float]] | None,
    options: DiarizeOptions,
) -> list[Turn]:
    """Speaker turns of 16 kHz mono ``samples``; [] when there is no speech."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    if speech is None:
        speech = speech_regions(samples)
    regions = _clean_regions(speech, len(samples))
    windows = _windows(regions)
    if not windows:
        return []
    labels = cluster(
        _embed(encoder, samples, windows),
        options.num_speakers,
        options.min_speakers,
        options.max_speakers,
        merge=merge_threshold(level_spread_db(samples)),
    )
    return _turns(samples, regions, windows, labels.tolist())


def level_spread_db(samples: np.ndarray) -> float:
    """How far the loud 100 ms frames (95th percentile of level) stand above the quiet ones
    (10th): a rough signal-to-noise ratio, a minute at a time (only the levels are kept)."""
    frame = round(QUIET_FRAME_S * SAMPLE_RATE)
    levels: list[np.ndarray] = []
    block = 600 * frame
    for offset in range(0, len(samples) - frame + 1, block):
        piece = np.asarray(samples[offset : offset + block], dtype=np.float64)
        piece = piece[: len(piece) // frame * frame].reshape(-1, frame)
        levels.append(10 * np.log10(np.maximum((piece**2).mean(axis=1), 1e-10)))
    if not levels:
        return 0.0
    db = np.concatenate(levels)
    return float(np.percentile(db, 95) - np.percentile(db, 10))


def merge_threshold(spread_db: float) -> float:
    """MERGE_NOISY at NOISY_DB of spread or less, MERGE_CLEAN at CLEAN_DB or more, a line
    between."""
    share = min(max((spread_db - NOISY_DB) / (CLEAN_DB - NOISY_DB), 0.0), 1.0)
    return MERGE_NOISY + share * (MERGE_CLEAN - MERGE_NOISY)


def _turns(
    samples: np.ndarray, regions: list[tuple[int, int]], windows: list[_Window], labels: list[int]
) -> list[Turn]:
    spans: list[tuple[int, int, int]] = []  # start, end (samples), speaker
    for r, group in _by_region(windows, labels):
        a, b = regions[r]
        edge = a
        for j, (w, label) in enumerate(group):
            if j + 1 < len(group):
                nxt, nxt_label = group[j + 1]
                c1, c2 = (w.start + w.end) // 2, (nxt.start + nxt.end) // 2
                cut = (c1 + c2) // 2 if label == nxt_label else _quietest(samples, c1, c2)
            else:
                cut = b
            spans.append((edge, cut, label))
            edge = cut
    turns: list[Turn] = []
    for start, end, label in spans:
        if end <= start:
            continue
        if turns and turns[-1].speaker == label and start <= round(turns[-1].end * SAMPLE_RATE):
            turns[-1] = Turn(turns[-1].start, end / SAMPLE_RATE, label)
        else:
            turns.append(Turn(start / SAMPLE_RATE, end / SAMPLE_RATE, label))
    order: dict[int, int] = {}  # 0, 1, … by first turn, with no gap
    for t in turns:
        order.setdefault(t.speaker, len(order))
    return [Turn(t.start, t.end, order[t.speaker]) for t in turns]


def _by_region(
    windows: list[_Window], labels: list[int]
) -> Iterator[tuple[int, list[tuple[_Window, int]]]]:
    group: list[tuple[_Window, int]] = []
    for w, label in zip(windows, labels, strict=True):
        if group and group[-1][0].region != w.region:
            yield group[0][0].region, group
            group = []
        group.append((w, label))
    if group:
        yield group[0][0].region, group


def _quietest(samples: np.ndarray, a: int, b: int) -> int:
    """The centre of the quietest QUIET_FRAME_S between samples a and b."""
    frame = round(QUIET_FRAME_S * SAMPLE_RATE)
    if b - a <= frame:
        return (a + b) // 2
    power = np.concatenate(([0.0], np.cumsum(samples[a:b].astype(np.float64) ** 2)))
    step = frame // 10
    energy = power[frame::step] - power[: len(power) - frame : step]  # each frame's sum
    return a + int(np.argmin(energy)) * step + frame // 2


# --- speakers on a transcript -------------------------------------------------------------


def _speaker_at(turns: list[Turn], start: float, end: float) -> int:
    """The speaker whose turns cover most of [start, end]; the nearest turn's if none does."""
    cover: dict[int, float] = {}
    for t in turns:
        overlap = min(end, t.end) - max(start, t.start)
        if overlap > 0:
            cover[t.speaker] = cover.get(t.speaker, 0.0) + overlap
    if cover:
        return max(cover, key=lambda s: (cover[s], -s))
    middle = (start + end) / 2
    nearest = min(turns, key=lambda t: max(t.start - middle, middle - t.end, 0.0))
    return nearest.speaker


def label_transcript(transcript: Transcript, turns: list[Turn]) -> Transcript:
    """A copy of ``transcript`` with a speaker on every segment and word (see the module doc)."""
    if not turns:
        unlabelled = [s.model_copy(update={"speaker": None}) for s in transcript.segments]
        return transcript.model_copy(update={"segments": unlabelled, "speakers": []})
    names: dict[int, str] = {}

    def name(index: int) -> str:
        return names.setdefault(index, f"Speaker {len(names) + 1}")

    segments: list[Segment] = []
    for seg in transcript.segments:
        words = seg.words or []
        if not words:
            who = name(_speaker_at(turns, seg.start, seg.end))
            segments.append(seg.model_copy(update={"speaker": who}))
            continue
        labelled = [
            w.model_copy(update={"speaker": name(_speaker_at(turns, w.start, w.end))})
            for w in words
        ]
        segments.extend(_split(seg, labelled))
    segments = [s.model_copy(update={"id": i}) for i, s in enumerate(segments)]
    speakers = [Speaker(id=n, name=n) for n in names.values()]
    return transcript.model_copy(update={"segments": segments, "speakers": speakers})


def _split(seg: Segment, words: list[Word]) -> list[Segment]:
    """``seg`` cut where its words change speaker (one piece when they do not)."""
    runs: list[list[Word]] = []
    for w in words:
        if runs and runs[-1][-1].speaker == w.speaker:
            runs[-1].append(w)
        else:
            runs.append([w])
    if len(runs) == 1:
        return [seg.model_copy(update={"words": words, "speaker": words[0].speaker})]
    pieces = []
    for i, run in enumerate(runs):
        start = seg.start if i == 0 else run[0].start
        end = seg.end if i == len(runs) - 1 else run[-1].end
        pieces.append(
            seg.model_copy(
                update={
                    "start": start,
                    "end": end,
                    "text": "".join(w.word for w in run),
                    "words": run,
                    "speaker": run[0].speaker,
                    # the decoder's tokens belong to the whole segment and cannot be divided
                    "tokens": [],
                }
            )
        )
    return pieces
