"""Transcribe a media file of any length in bounded memory.

A file is decoded block by block (:class:`~hushscribe.audio.AudioReader`). Up to
``engine.window_s`` of audio it is transcribed whole, as before. Longer audio is cut into
windows of at most that length, each cut at the quietest moment of its last minute (a pause
between words, never inside one), and the windows are transcribed one after another with the
file's one language. Peak memory is then set by ``engine.window_s``, not by the file: a 4 h
meeting holds about ten minutes of samples at a time instead of 4 h (≈ 0.9 GB of float32, plus
what VAD and the log-mel features derive from it).

The language of a long file whose language is not given is detected over windows spread across
the whole file (as for short files), read in a first decoding pass that keeps only those spans:
decoding is fast next to transcribing, and a meeting that opens in another language is still
read right.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Protocol

import numpy as np

from hushscribe.audio import SAMPLE_RATE, AudioReader, Samples
from hushscribe.engine.language import detect_language, speech_chunks, speech_only
from hushscribe.engine.loader import LoadedModel
from hushscribe.engine.options import TranscribeOptions
from hushscribe.engine.transcriber import (
    SPEECH_PER_WINDOW_S,
    _use_batched,
    _vad_options,
    check_model_fits,
    transcribe,
)
from hushscribe.settings import EngineSettings
from hushscribe.transcript import Segment, Transcript, Word

BLOCK_S = 30
"""Audio decoded between two checks for cancellation or a deadline."""
CUT_SEARCH_S = 60
"""A window is cut at the quietest moment of its last minute."""
CUT_FRAME_S = 0.2
"""Loudness is compared over frames this long: shorter than a pause, longer than a stop."""
LANGUAGE_SPAN_S = 60
"""Raw audio read around each language-detection point; VAD keeps up to 30 s of its speech."""


class Watch(Protocol):
    """What the caller learns, and how it stops the work: any of these may raise to cancel."""

    def decoding(self) -> None:
        """Audio is about to be decoded."""

    def transcribing(self) -> None:
        """A window is about to be transcribed."""

    def progress(self, done: float, total: float) -> None:
        """Audio seconds transcribed so far, of ``total``."""


class _Quiet:
    def decoding(self) -> None:
        pass

    def transcribing(self) -> None:
        pass

    def progress(self, done: float, total: float) -> None:
        pass


def quietest_cut(audio: Samples, search_s: float = CUT_SEARCH_S) -> int:
    """Where to end a window: the middle of the quietest frame in its last ``search_s``."""
    frame = int(CUT_FRAME_S * SAMPLE_RATE)
    start = max(0, len(audio) - int(search_s * SAMPLE_RATE))
    tail = audio[start : start + (len(audio) - start) // frame * frame]
    if len(tail) < frame:
        return len(audio)
    energy = np.square(tail.reshape(-1, frame), dtype=np.float64).mean(axis=1)
    return start + int(np.argmin(energy)) * frame + frame // 2


def transcribe_file(
    model: LoadedModel,
    open_reader: Callable[[], AudioReader],
    options: TranscribeOptions,
    settings: EngineSettings,
    watch: Watch | None = None,
) -> Transcript:
    """Transcribe the file ``open_reader`` opens (it may be opened twice), in windows of at most
    ``settings.window_s``; one transcript for the whole file."""
    watch = watch or _Quiet()
    window = int(settings.window_s * SAMPLE_RATE)
    watch.decoding()  # opening parses the container: hostile input can hang there too
    with open_reader() as reader:
        blocks = watched(reader.blocks(BLOCK_S * SAMPLE_RATE), watch)
        head, whole = read_head(blocks, window)
        if whole:  # the whole file fits in one window
            watch.transcribing()
            return transcribe(model, head, options, settings, watch.progress)
        total = reader.info.duration_s or 0.0
        opts = _with_language(model, open_reader, options, settings, total, watch)
        return _windows(model, head, blocks, opts, settings, total, watch)


def read_head(blocks: Iterator[Samples], limit: int) -> tuple[Samples, bool]:
    """Audio from ``blocks`` until more than ``limit`` samples are held or the file ends; and
    whether it ended (the head is then the whole file)."""
    head: list[Samples] = []
    held = 0
    for block in blocks:
        head.append(block)
        held += len(block)
        if held > limit:
            return np.concatenate(head), False
    return (np.concatenate(head) if head else np.zeros(0, dtype=np.float32)), True


def watched(blocks: Iterator[Samples], watch: Watch) -> Iterator[Samples]:
    """``blocks``, telling ``watch`` before each one is decoded (it may raise to stop)."""
    while True:
        watch.decoding()
        block = next(blocks, None)
        if block is None:
            return
        yield block


def _windows(
    model: LoadedModel,
    carry: Samples,
    blocks: Iterator[Samples],
    opts: TranscribeOptions,
    settings: EngineSettings,
    total_s: float,
    watch: Watch,
) -> Transcript:
    window = int(settings.window_s * SAMPLE_RATE)
    batched = _use_batched(opts, max(total_s, settings.window_s), settings)  # the whole file's
    offset = 0
    pieces: list[tuple[float, Transcript]] = []
    ended = False
    while len(carry) or not ended:
        while not ended and len(carry) <= window:
            block = next(blocks, None)
            if block is None:
                ended = True
            else:
                carry = np.concatenate((carry, block))
        cut = len(carry) if ended and len(carry) <= window else quietest_cut(carry[:window])
        piece, carry = carry[:cut], carry[cut:]
        start_s = offset / SAMPLE_RATE
        estimate = max(total_s, start_s + len(piece) / SAMPLE_RATE)

        def progress(done: float, _total: float, at: float = start_s, of: float = estimate) -> None:
            watch.progress(at + done, of)

        watch.transcribing()
        forced = opts.model_copy(update={"batched": batched})
        pieces.append((start_s, transcribe(model, piece, forced, settings, progress)))
        offset += cut
    return _joined(pieces, opts, offset / SAMPLE_RATE)


def _joined(
    pieces: list[tuple[float, Transcript]], opts: TranscribeOptions, duration: float
) -> Transcript:
    segments: list[Segment] = []
    for start_s, part in pieces:
        for seg in part.segments:
            words = None
            if seg.words is not None:
                words = [
                    Word(start=w.start + start_s, end=w.end + start_s, word=w.word,
                         probability=w.probability)
                    for w in seg.words
                ]  # fmt: skip
            shifted = {"start": seg.start + start_s, "end": seg.end + start_s, "words": words}
            segments.append(seg.model_copy(update={"id": len(segments), **shifted}))
    first = pieces[0][1]
    recorded = dict(first.options)
    recorded.update(language=opts.language, windows=len(pieces))
    return first.model_copy(
        update={"segments": segments, "duration": duration, "options": recorded}
    )


def _with_language(
    model: LoadedModel,
    open_reader: Callable[[], AudioReader],
    options: TranscribeOptions,
    settings: EngineSettings,
    total_s: float,
    watch: Watch,
) -> TranscribeOptions:
    """``options`` with the file's language: given, English for English-only models, or
    detected over windows spread across the file."""
    check_model_fits(model, options.resolved(settings))
    if options.language is not None:
        return options
    if not model.info.multilingual:
        return options.model_copy(update={"language": "en"})
    spans = _spread_spans(open_reader, total_s, settings, watch)
    vad = _vad_options(options, batched=False)
    totals: dict[str, float] = defaultdict(float)
    for span in spans:
        speech = speech_only(span, speech_chunks(span, vad)) if vad is not None else span
        speech = speech if len(speech) else span  # no speech found: judge the raw audio
        _, _, probabilities = detect_language(model, speech[: 30 * SAMPLE_RATE], 1)
        for lang, p in probabilities.items():
            totals[lang] += p / len(spans)
    model.whisper.forget()
    language = max(totals, key=lambda k: totals[k])
    return options.model_copy(update={"language": language})


def _spread_spans(
    open_reader: Callable[[], AudioReader], total_s: float, settings: EngineSettings, watch: Watch
) -> list[Samples]:
    """Spans of ``LANGUAGE_SPAN_S`` spread evenly over the file, one per five minutes (at most
    ``settings.language_windows``), read in one decoding pass that keeps nothing else."""
    count = max(1, min(settings.language_windows, math.ceil(total_s / SPEECH_PER_WINDOW_S)))
    last = max(0.0, total_s - LANGUAGE_SPAN_S)
    starts = [round(i * last / (count - 1) * SAMPLE_RATE) if count > 1 else 0 for i in range(count)]
    span = LANGUAGE_SPAN_S * SAMPLE_RATE
    kept: list[list[Samples]] = [[] for _ in starts]
    position = 0
    watch.decoding()
    with open_reader() as reader:
        for block in watched(reader.blocks(BLOCK_S * SAMPLE_RATE), watch):
            end = position + len(block)
            for k, s in enumerate(starts):
                lo, hi = max(s, position), min(s + span, end)
                if lo < hi:
                    kept[k].append(block[lo - position : hi - position])
            position = end
            if position >= starts[-1] + span:
                break
    return [np.concatenate(parts) for parts in kept if parts]
