"""``transcribe(model, audio, options) -> Transcript``: faster-whisper behind one call."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from faster_whisper.transcribe import restore_speech_timestamps
from faster_whisper.vad import VadOptions

from hushscribe.audio import SAMPLE_RATE, Samples
from hushscribe.engine.language import detect_language, speech_chunks, speech_only
from hushscribe.engine.loader import LoadedModel
from hushscribe.engine.options import TranscribeOptions
from hushscribe.errors import InvalidOption
from hushscribe.settings import EngineSettings
from hushscribe.transcript import ModelRef, Segment, Transcript, Word

ProgressCallback = Callable[[float, float], None]
"""Called with (audio seconds done, audio seconds in all)."""

CHINESE = ("zh", "yue")
_OPENCC_CONFIG = {"simplified": "t2s", "traditional": "s2t"}


@cache
def _converter(config: str) -> Any:
    import opencc

    return opencc.OpenCC(config)


def convert_script(text: str, script: str) -> str:
    """Chinese text in the script asked for (``as-is`` leaves the model's output alone)."""
    if script not in _OPENCC_CONFIG:
        return text
    return str(_converter(_OPENCC_CONFIG[script]).convert(text))


BATCH_CHUNK_S = 30
"""The batched pipeline decodes 30 s windows; speech runs longer than that must be split by VAD,
or faster-whisper transcribes only their first 30 s."""

BATCHED_WITHOUT_TIMESTAMPS = True
"""The batched pipeline decodes each clip once, with no seeking. With timestamp tokens Whisper
often ends a clip's text at a timestamp before the clip's end, expecting the sequential decoder
to seek there and go on; batched, nothing goes on, and the rest of the clip is lost (12 minutes
of a reading lost its first line in 12 of 14 repeats). Without timestamp tokens each clip is
read to its end; a segment is then one clip (≤ 30 s, cut at pauses by VAD). faster-whisper's
own batched pipeline defaults to the same."""


BATCH_MIN_SILENCE_MS = 160
"""A file decoded with the batched pipeline is cut into clips between speech regions; regions
split at pauses this short (faster-whisper's batched default) give it places to cut. With the
sequential default (2 s) a 30 s stretch of conversation is cut wherever 30 s fall, inside
words: 12.5 minutes of clips lost 9 of 63 against plain batched's 6."""


def _vad_options(options: TranscribeOptions, batched: bool) -> VadOptions | None:
    if not options.vad:
        return None
    params = options.vad_parameters.model_dump()
    if batched:
        params["max_speech_duration_s"] = BATCH_CHUNK_S
    return VadOptions(**params)


def _file_vad(vad: VadOptions) -> VadOptions:
    """VAD for one file through the batched pipeline: its own short-pause default, unless the
    caller asked for shorter."""
    short = min(vad.min_silence_duration_ms, BATCH_MIN_SILENCE_MS)
    return VadOptions(**{**vars(vad), "min_silence_duration_ms": short})


def _use_batched(options: TranscribeOptions, duration: float, settings: EngineSettings) -> bool:
    if options.batched is not None:
        return options.batched
    return (
        settings.batched_min_duration_s is not None and duration >= settings.batched_min_duration_s
    )


def _fixed_clips(n_samples: int) -> list[dict[str, float]]:
    """30 s clips, in seconds, for the batched pipeline when VAD is off."""
    duration = n_samples / SAMPLE_RATE
    starts = range(0, int(duration) + 1, BATCH_CHUNK_S)
    return [{"start": s, "end": min(s + BATCH_CHUNK_S, duration)} for s in starts if s < duration]


@dataclass
class Prepared:
    """One audio ready to decode: options resolved, speech found, language known."""

    opts: TranscribeOptions
    audio: Samples
    duration: float
    batched: bool
    vad: VadOptions | None
    chunks: list[dict[str, int]] | None
    speech: Samples
    language: str | None
    """None until detected, when detection was left to the batched decode."""
    probability: float

    def decode_kwargs(self) -> dict[str, Any]:
        """faster-whisper arguments that must agree for jobs to share a batch."""
        o = self.opts
        return {
            "language": self.language,
            "task": o.task,
            "beam_size": o.beam_size,
            "temperature": list(o.temperature),
            "initial_prompt": o.initial_prompt,
            "hotwords": o.hotwords,
            "word_timestamps": o.word_timestamps,
            "condition_on_previous_text": o.condition_on_previous_text,
        }


SPEECH_PER_WINDOW_S = 300
"""One language-detection window per 5 minutes of speech: each costs an encoder pass, which is
about 1/10 of what 5 minutes take to transcribe, so extra windows stay under ~2 % of the work
while a long meeting that opens in another language is still read right."""


def language_windows(speech_s: float, most: int) -> int:
    return max(1, min(most, math.ceil(speech_s / SPEECH_PER_WINDOW_S)))


def check_model_fits(model: LoadedModel, opts: TranscribeOptions) -> None:
    if opts.task == "translate" and not model.info.multilingual:
        raise InvalidOption(
            f"model '{model.info.name}' is English-only and cannot translate; "
            "use a multilingual model"
        )
    if opts.language not in (None, "en") and not model.info.multilingual:
        raise InvalidOption(
            f"model '{model.info.name}' is English-only; it cannot transcribe language "
            f"'{opts.language}'"
        )


def prepare(
    model: LoadedModel,
    audio: Samples,
    options: TranscribeOptions,
    settings: EngineSettings,
    batched: bool | None = None,
    detect: bool = True,
) -> Prepared:
    """Resolve options, run VAD once, detect the language over windows spread across the speech
    (unless ``detect`` is false and there is speech to decode: then an unknown language stays
    None, for the decode to find)."""
    opts = options.resolved(settings)
    check_model_fits(model, opts)
    duration = len(audio) / SAMPLE_RATE
    use_batched = _use_batched(opts, duration, settings) if batched is None else batched
    vad = _vad_options(opts, use_batched)
    # VAD runs once: its speech feeds language detection and (unbatched) decoding, as in
    # faster-whisper, whose timestamps we then map back to the original audio.
    chunks = speech_chunks(audio, vad) if vad is not None else None
    speech = speech_only(audio, chunks) if chunks is not None else audio
    language: str | None
    if opts.language is not None:
        language, probability = opts.language, 1.0
    elif detect or not len(speech) or not model.info.multilingual:
        # Without speech there is no decode to share the pass with; English-only models need none.
        sample = speech if len(speech) else audio
        windows = language_windows(len(sample) / SAMPLE_RATE, settings.language_windows)
        language, probability, _ = detect_language(model, sample, windows)
    else:
        language, probability = None, 1.0
    return Prepared(opts, audio, duration, use_batched, vad, chunks, speech, language, probability)


def transcribe(
    model: LoadedModel,
    audio: Samples,
    options: TranscribeOptions,
    settings: EngineSettings,
    progress: ProgressCallback | None = None,
) -> Transcript:
    """Transcribe (or translate to English) 16 kHz mono ``audio`` with ``model``."""
    try:
        return _transcribe(model, audio, options, settings, progress)
    finally:
        model.whisper.forget()


def _transcribe(
    model: LoadedModel,
    audio: Samples,
    options: TranscribeOptions,
    settings: EngineSettings,
    progress: ProgressCallback | None,
) -> Transcript:
    p = prepare(model, audio, options, settings)
    segments_iter: Iterable[Any]
    if p.chunks is not None and not p.chunks:
        segments_iter = []  # VAD found no speech: no words, and no decoding to find none
    elif p.batched:
        clips = {"clip_timestamps": _fixed_clips(len(audio))} if p.vad is None else {}
        segments_iter, _ = model.batched.transcribe(
            audio, batch_size=p.opts.batch_size, without_timestamps=BATCHED_WITHOUT_TIMESTAMPS,
            vad_filter=p.vad is not None, vad_parameters=p.vad and _file_vad(p.vad), **clips,
            **p.decode_kwargs(),
        )  # fmt: skip
    else:
        segments_iter, _ = model.whisper.transcribe(p.speech, vad_filter=False, **p.decode_kwargs())
        if p.chunks:
            segments_iter = restore_speech_timestamps(segments_iter, p.chunks, SAMPLE_RATE)
    return build_transcript(model, p, segments_iter, progress)


def build_transcript(
    model: LoadedModel,
    p: Prepared,
    segments_iter: Iterable[Any],
    progress: ProgressCallback | None = None,
    offset: float = 0.0,
    extra: dict[str, Any] | None = None,
) -> Transcript:
    """faster-whisper segments (times shifted back by ``offset``) → the canonical Transcript:
    timestamps monotonic and inside the audio, Chinese in the script asked for."""
    assert p.language is not None, "the language is known before a transcript is built"
    duration = p.duration
    script = p.opts.zh_script if p.language in CHINESE else "as-is"
    segments: list[Segment] = []
    last_start = 0.0
    for seg in segments_iter:
        start = min(max(seg.start - offset, last_start), duration)
        end = min(max(seg.end - offset, start), duration)
        last_start = start
        words = None
        if seg.words is not None:
            words = [
                Word(
                    start=min(max(w.start - offset, start), end),
                    end=min(max(w.end - offset, w.start - offset, start), end),
                    word=convert_script(w.word, str(script)),
                    probability=w.probability,
                )
                for w in seg.words
            ]
        segments.append(
            Segment(
                id=len(segments),
                start=start,
                end=end,
                text=convert_script(seg.text, str(script)),
                words=words,
                avg_logprob=seg.avg_logprob,
                no_speech_prob=seg.no_speech_prob,
                compression_ratio=seg.compression_ratio,
                temperature=seg.temperature or 0.0,
                tokens=list(seg.tokens),
            )
        )
        if progress:
            progress(end, duration)
    if progress:
        progress(duration, duration)
    recorded = p.opts.model_dump(mode="json")
    recorded.update(batched=p.batched, device=model.device, compute_type=model.compute_type)
    recorded.update(extra or {})
    return Transcript(
        task=p.opts.task,
        language=p.language,
        language_probability=round(p.probability, 4),
        duration=duration,
        segments=segments,
        model=ModelRef(name=model.info.name, sha256=model.info.sha256),
        options=recorded,
    )
