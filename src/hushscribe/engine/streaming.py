"""Decode the buffers of several live streams together, one step of each.

A live stream is decoded again and again as its audio grows (see :mod:`hushscribe.stream`). Each
step decodes every stream's current buffer (at most 30 s) from its start: the words that two
consecutive decodes agree on become final text. The steps of all streams that share a model are
decoded in one batch: one encoder pass over all their windows, one greedy ``generate`` over all
the prompts, one forced alignment per language for the word times. A turn's last decode
(``final``) goes through faster-whisper's own decoder with the full options instead: beam search,
temperature fallback, word timestamps.

Each stream's previous text goes into its prompt (Whisper's ``<|startofprev|>``). CTranslate2
decodes a batch only when ``<|startoftranscript|>`` stands at the same position in every prompt,
so the prompted streams of a step share one length of previous text (the shortest among them, cut
from the far end), and streams with too little text are decoded without it, in a second batch.

On CPU a batch costs about what its windows cost one by one (base, 2 threads: ~1.2 s a step for
one stream, ~4.7 s for four); the batch pays on a GPU, and it keeps one step for all streams.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import (
    get_compression_ratio,
    get_suppressed_tokens,
    merge_punctuations,
)

from hushscribe.audio import SAMPLE_RATE
from hushscribe.engine.loader import LoadedModel
from hushscribe.errors import InvalidOption

WINDOW_S = 30
"""Whisper reads 30 s windows; a step's buffer longer than that is cut to its first 30 s."""
MIN_SAMPLES = SAMPLE_RATE // 10
"""Less than 0.1 s of audio holds no word: answered empty, without decoding."""
PROMPT_MIN_TOKENS = 8
"""Previous text shorter than this is dropped rather than shortening every other stream's prompt
to it (a few tokens say little about names or style)."""
TOKENS_PER_S = 12
"""New tokens a step may produce per second of audio (speech is 3-6 tokens a second, Chinese up
to ~10, plus timestamp tokens): a greedy decode caught in a repetition loop stops there instead of
running to Whisper's 448 tokens."""
COMPRESSION_RATIO_MAX = 2.4
"""faster-whisper's threshold: text that compresses better than this is a repetition loop."""
NO_SPEECH_PROB = 0.6
LOG_PROB_MIN = -1.0
"""faster-whisper's test for a silent window: likely no speech and an unlikely text."""
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
FINAL_BEAM_SIZE = 5


@dataclass(frozen=True)
class StepRequest:
    """One stream's buffer to decode now."""

    audio: np.ndarray
    """float32 mono 16 kHz: the stream's current (trimmed) buffer, at most 30 s."""
    language: str | None
    """None: detect it."""
    prompt: str | None
    """Confirmed text before the buffer, to condition the decoder on."""
    task: str = "transcribe"
    final: bool = False
    """The turn's last decode, with the full options (beam search, temperature fallback)."""


@dataclass(frozen=True)
class StreamWord:
    start: float
    """Seconds from the start of the request's audio."""
    end: float
    word: str
    """With its leading space where the language puts one, so words concatenate into text."""
    probability: float


@dataclass(frozen=True)
class StreamDecode:
    words: list[StreamWord]
    text: str
    language: str


def decode_many(model: LoadedModel, requests: list[StepRequest]) -> list[StreamDecode]:
    """Every request decoded, in order: the steps in one batch (one encoder pass, one greedy
    generate, word times by forced alignment), the finals one by one with the full options."""
    for request in requests:
        check_request(model, request)
    out: list[StreamDecode | None] = [None] * len(requests)
    steps = [i for i, r in enumerate(requests) if not r.final and len(r.audio) >= MIN_SAMPLES]
    for i, decoded in zip(steps, _decode_steps(model, [requests[i] for i in steps]), strict=True):
        out[i] = decoded
    for i, request in enumerate(requests):
        if out[i] is not None:
            continue
        if len(request.audio) < MIN_SAMPLES:
            out[i] = StreamDecode([], "", request.language or "en")
        else:
            out[i] = _decode_final(model, request)
    return [d for d in out if d is not None]


def check_request(model: LoadedModel, request: StepRequest) -> None:
    if request.task not in ("transcribe", "translate"):
        raise InvalidOption(f"task must be 'transcribe' or 'translate', not '{request.task}'")
    if model.info.multilingual:
        return
    if request.task == "translate":
        raise InvalidOption(
            f"model '{model.info.name}' is English-only and cannot translate; "
            "use a multilingual model"
        )
    if request.language not in (None, "en"):
        raise InvalidOption(
            f"model '{model.info.name}' is English-only; it cannot transcribe language "
            f"'{request.language}'"
        )


def _decode_final(model: LoadedModel, request: StepRequest) -> StreamDecode:
    whisper = model.whisper
    try:
        segments, info = whisper.transcribe(
            request.audio[: WINDOW_S * SAMPLE_RATE],
            language=request.language if model.info.multilingual else "en",
            task=request.task,
            beam_size=FINAL_BEAM_SIZE,
            initial_prompt=request.prompt or None,
            word_timestamps=True,
            vad_filter=False,
        )
        segments = list(segments)
    finally:
        whisper.forget()  # its one-window cache holds this stream's audio
    words = [
        StreamWord(float(w.start), float(w.end), str(w.word), float(w.probability))
        for seg in segments
        for w in seg.words or []
    ]
    text = "".join(str(seg.text) for seg in segments).strip()
    return StreamDecode(words, text, str(info.language))


@dataclass
class _Step:
    request: StepRequest
    frames: int
    """Mel frames of content (100 a second)."""
    tokenizer: Tokenizer | None = None
    language: str = "en"
    previous: list[int] = field(default_factory=list)
    """Previous-text tokens of its prompt (when decoded with them)."""
    tokens: list[int] = field(default_factory=list)
    """Text and timestamp tokens the decoder produced."""
    looping: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return self.language, self.request.task

    @property
    def text_tokens(self) -> list[int]:
        assert self.tokenizer is not None
        eot = self.tokenizer.eot
        return [t for t in self.tokens if t < eot]


def _decode_steps(model: LoadedModel, requests: list[StepRequest]) -> list[StreamDecode]:
    if not requests:
        return []
    whisper = model.whisper
    steps: list[_Step] = []
    features = []
    for request in requests:
        mel = whisper.feature_extractor(request.audio[: WINDOW_S * SAMPLE_RATE])
        frames = min(mel.shape[-1] - 1, whisper.feature_extractor.nb_max_frames)
        features.append(pad_or_trim(mel[:, :frames]))
        steps.append(_Step(request, frames))
    # faster-whisper's own encode: our Whisper.encode would keep this audio in its one-window cache.
    encoded = WhisperModel.encode(whisper, np.stack(features))
    whisper.encoder_passes += 1
    _resolve_languages(model, encoded, steps)
    tokenizers = {key: _tokenizer(model, *key) for key in {s.key for s in steps}}
    for s in steps:
        s.tokenizer = tokenizers[s.key]
    prompted, bare = _set_previous(whisper, steps)
    _generate(whisper, encoded, steps, prompted, previous=True)
    _generate(whisper, encoded, steps, bare, previous=False)
    # A loop often copies the previous text: those windows are decoded once more without it.
    _generate(whisper, encoded, steps, [i for i in prompted if steps[i].looping], previous=False)
    words: list[list[StreamWord]] = [[] for _ in steps]
    for key, tokenizer in tokenizers.items():
        group = [i for i, s in enumerate(steps) if s.key == key and not s.looping and s.text_tokens]
        if group:
            aligned = _align(whisper, tokenizer, _subset(encoded, group, len(steps)),
                             [steps[i] for i in group])  # fmt: skip
            for i, found in zip(group, aligned, strict=True):
                words[i] = found
    return [
        StreamDecode(found, "".join(w.word for w in found).strip(), s.language)
        for s, found in zip(steps, words, strict=True)
    ]


def _tokenizer(model: LoadedModel, language: str, task: str) -> Tokenizer:
    multilingual = bool(model.info.multilingual)
    return Tokenizer(
        model.whisper.hf_tokenizer,
        multilingual,
        task=task if multilingual else None,
        language=language if multilingual else None,
    )


def _resolve_languages(
    model: LoadedModel, encoded: ctranslate2.StorageView, steps: list[_Step]
) -> None:
    """Each step's language: the one asked for, else the likeliest in its own encoding."""
    for s in steps:
        s.language = s.request.language or "en"
    if not model.info.multilingual or all(s.request.language for s in steps):
        return
    detected = model.whisper.model.detect_language(encoded)
    for s, found in zip(steps, detected, strict=True):
        if s.request.language is None:
            token, _ = max(found, key=lambda pair: pair[1])
            s.language = str(token)[2:-2]


def _set_previous(whisper: Any, steps: list[_Step]) -> tuple[list[int], list[int]]:
    """(indexes of the steps decoded with previous text, of those decoded without); the first
    all keep the same number of previous tokens, the most recent ones."""
    most = whisper.max_length // 2 - 1
    for s in steps:
        prompt = (s.request.prompt or "").strip()
        assert s.tokenizer is not None
        s.previous = s.tokenizer.encode(" " + prompt)[-most:] if prompt else []
    prompted = [i for i, s in enumerate(steps) if len(s.previous) >= PROMPT_MIN_TOKENS]
    bare = [i for i, s in enumerate(steps) if len(s.previous) < PROMPT_MIN_TOKENS]
    common = min((len(steps[i].previous) for i in prompted), default=0)
    for i in prompted:
        steps[i].previous = steps[i].previous[-common:]
    return prompted, bare


def _generate(
    whisper: Any,
    encoded: ctranslate2.StorageView,
    steps: list[_Step],
    rows: list[int],
    previous: bool,
) -> None:
    """Greedy decode of the windows ``rows`` of the batch, with or without their previous text."""
    if not rows:
        return
    chosen = [steps[i] for i in rows]
    prompts = [
        whisper.get_prompt(s.tokenizer, previous_tokens=s.previous if previous else [],
                           without_timestamps=False)
        for s in chosen
    ]  # fmt: skip
    longest_s = max(s.frames for s in chosen) / 100
    max_length = min(whisper.max_length, len(prompts[0]) + int(longest_s * TOKENS_PER_S) + 16)
    results = whisper.model.generate(
        _subset(encoded, rows, len(steps)),
        prompts,
        beam_size=1,
        max_length=max_length,
        suppress_blank=True,
        suppress_tokens=get_suppressed_tokens(chosen[0].tokenizer, [-1]),
        return_scores=True,
        return_no_speech_prob=True,
    )
    for s, result in zip(chosen, results, strict=True):
        tokens = list(result.sequences_ids[0])
        average = result.scores[0] * len(tokens) / (len(tokens) + 1)
        silent = result.no_speech_prob > NO_SPEECH_PROB and average < LOG_PROB_MIN
        s.tokens = [] if silent else tokens
        assert s.tokenizer is not None
        text = s.tokenizer.decode(s.text_tokens)
        s.looping = get_compression_ratio(text) > COMPRESSION_RATIO_MAX


def _align(
    whisper: Any, tokenizer: Tokenizer, encoded: ctranslate2.StorageView, steps: list[_Step]
) -> list[list[StreamWord]]:
    """Words with times, by forced alignment of each window's text (faster-whisper's DTW over
    the alignment heads), punctuation merged into the words as faster-whisper does."""
    alignments = whisper.find_alignment(
        tokenizer, [s.text_tokens for s in steps], encoded, [s.frames for s in steps]
    )
    out = []
    for s, alignment in zip(steps, alignments, strict=True):
        merge_punctuations(alignment, PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS)
        timed = [w for w in alignment if w["word"]]
        _shorten_long_words(timed)
        duration = s.frames / 100
        out.append(
            [
                StreamWord(
                    start=min(float(w["start"]), duration),
                    end=min(float(w["end"]), duration),
                    word=str(w["word"]),
                    probability=float(w["probability"]),
                )
                for w in timed
            ]
        )
    return out


def _shorten_long_words(words: list[dict[str, Any]]) -> None:
    """DTW stretches a word over the pause before it; like faster-whisper, a word longer than
    twice the median (at most 1.4 s) is cut to that length, from its start."""
    durations = np.array([w["end"] - w["start"] for w in words])
    durations = durations[durations.nonzero()]
    if not len(durations):
        return
    longest = 2 * min(0.7, float(np.median(durations)))
    for w in words:
        if w["end"] - w["start"] > longest:
            w["start"] = w["end"] - longest


def _subset(
    encoded: ctranslate2.StorageView, rows: list[int], batch: int
) -> ctranslate2.StorageView:
    """The encoder output of some windows of the batch (CTranslate2 moves it back to the model's
    device when decoding)."""
    if rows == list(range(batch)):
        return encoded
    host = encoded if encoded.device == "cpu" else encoded.to_device(ctranslate2.Device.cpu)
    return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.asarray(host)[rows]))
