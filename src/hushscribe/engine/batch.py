"""Several jobs for one model in one batched decode.

Short recordings waste most of Whisper's work: each is padded to a 30 s window and decoded alone.
Here the audio of several jobs is laid end to end and handed to faster-whisper's batched pipeline
as clips, each clip inside one job's audio (at most 30 s, cut at VAD boundaries), so windows of
different jobs are encoded and decoded together. A clip never spans two jobs, so no segment can mix
two people's words; segments are handed back to their job by time and shifted to its own clock.

Jobs share a batch only when everything that shapes decoding agrees (task, beam size, prompt,
hotwords…). The language need not: each clip is decoded in its job's own language, and a job
whose language is unknown has it detected from the encoding its decode needs anyway (see
``pipeline.py``). Jobs that ask for word timestamps are detected first and grouped by language,
because words are split differently in Chinese, Japanese or Thai. The batched pipeline decodes
each window once at the first temperature (no fallback) and without the previous window's text,
so it is used for short files only.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hushscribe.audio import SAMPLE_RATE, Samples
from hushscribe.engine.loader import LoadedModel
from hushscribe.engine.options import TranscribeOptions
from hushscribe.engine.pipeline import JobsPipeline
from hushscribe.engine.transcriber import (
    BATCH_CHUNK_S,
    BATCHED_WITHOUT_TIMESTAMPS,
    Prepared,
    build_transcript,
    prepare,
)
from hushscribe.errors import HushscribeError
from hushscribe.settings import EngineSettings
from hushscribe.transcript import Transcript

CLIP_SAMPLES = BATCH_CHUNK_S * SAMPLE_RATE


@dataclass
class Item:
    audio: Samples
    options: TranscribeOptions


def clips_of(p: Prepared) -> list[tuple[int, int]]:
    """Sample ranges of ``p.audio`` to decode, each at most 30 s, cut between speech regions."""
    if p.chunks is None:
        n = len(p.audio)
        return [(s, min(s + CLIP_SAMPLES, n)) for s in range(0, n, CLIP_SAMPLES)]
    clips: list[tuple[int, int]] = []
    for chunk in p.chunks:
        start, end = int(chunk["start"]), int(chunk["end"])
        if clips and end - clips[-1][0] <= CLIP_SAMPLES:
            clips[-1] = (clips[-1][0], end)
        else:
            clips.append((start, min(end, start + CLIP_SAMPLES)))
    return clips


def _group_key(p: Prepared) -> str:
    shared = p.decode_kwargs()
    if not p.opts.word_timestamps:
        del shared["language"]  # set per clip by JobsPipeline
    return json.dumps([shared, p.opts.batch_size], sort_keys=True)


def transcribe_many(
    model: LoadedModel, items: Sequence[Item], settings: EngineSettings
) -> list[Transcript | HushscribeError]:
    """Transcribe ``items`` together; one result (or the error of that item) per item."""
    try:
        return _transcribe_many(model, items, settings)
    finally:
        model.whisper.forget()


def _transcribe_many(
    model: LoadedModel, items: Sequence[Item], settings: EngineSettings
) -> list[Transcript | HushscribeError]:
    out: list[Transcript | HushscribeError | None] = [None] * len(items)
    groups: dict[str, list[tuple[int, Prepared]]] = {}
    for i, item in enumerate(items):
        try:
            detect = bool(item.options.word_timestamps)
            p = prepare(model, item.audio, item.options, settings, batched=True, detect=detect)
        except HushscribeError as exc:
            out[i] = exc
            continue
        if p.chunks is not None and not p.chunks:
            out[i] = build_transcript(model, p, [])  # no speech: nothing to decode
            continue
        groups.setdefault(_group_key(p), []).append((i, p))
    for members in groups.values():
        for i, transcript in _decode_group(model, members):
            out[i] = transcript
    done = [r for r in out if r is not None]
    assert len(done) == len(items), "every item has its transcript or its error"
    return done


def _decode_group(
    model: LoadedModel, members: list[tuple[int, Prepared]]
) -> list[tuple[int, Transcript]]:
    offsets: list[int] = []
    clip_times: list[dict[str, float]] = []
    clip_jobs: list[int] = []
    position = 0
    for k, (_, p) in enumerate(members):
        offsets.append(position)
        for start, end in clips_of(p):
            clip_times.append(
                {"start": (position + start) / SAMPLE_RATE, "end": (position + end) / SAMPLE_RATE}
            )
            clip_jobs.append(k)
        position += len(p.audio)
    joined = np.concatenate([p.audio for _, p in members]).astype(np.float32, copy=False)
    first = members[0][1]
    pipeline = JobsPipeline(model.whisper, clip_jobs, [p.language for _, p in members])
    kwargs = first.decode_kwargs()
    # The tokenizer needs some language; JobsPipeline puts each job's own into its clips' prompts.
    kwargs["language"] = next((p.language for _, p in members if p.language), "en")
    segments, _ = pipeline.transcribe(
        joined,
        clip_timestamps=clip_times,
        batch_size=first.opts.batch_size,
        without_timestamps=BATCHED_WITHOUT_TIMESTAMPS,
        vad_filter=False,
        **kwargs,
    )
    starts_s = [o / SAMPLE_RATE for o in offsets]
    per_job: list[list[object]] = [[] for _ in members]
    for seg in segments:
        owner = bisect.bisect_right(starts_s, (seg.start + seg.end) / 2) - 1
        per_job[max(0, owner)].append(seg)
    for k, (_, p) in enumerate(members):
        if p.language is None:  # detected from the encoding of its first clip
            p.language, p.probability = pipeline.languages[k], pipeline.probabilities[k]
    extra = {"batch_jobs": len(members)}
    return [
        (i, build_transcript(model, p, per_job[k], offset=starts_s[k], extra=extra))
        for k, (i, p) in enumerate(members)
    ]
