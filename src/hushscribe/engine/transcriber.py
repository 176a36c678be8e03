"""``transcribe(model, audio, options) -> Transcript``: faster-whisper behind one call."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from faster_whisper.vad import VadOptions

from hushscribe.audio import SAMPLE_RATE, Samples
from hushscribe.engine.language import detect_language
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


def _vad_options(options: TranscribeOptions, batched: bool) -> VadOptions | None:
    if not options.vad:
        return None
    params = options.vad_parameters.model_dump()
    if batched:
        params["max_speech_duration_s"] = BATCH_CHUNK_S
    return VadOptions(**params)


def _use_batched(options: TranscribeOptions, duration: float, settings: EngineSettings) -> bool:
    if options.batched is not None:
        return options.batched
    return duration >= settings.batched_min_duration_s


def _fixed_clips(n_samples: int) -> list[dict[str, float]]:
    """30 s clips, in seconds, for the batched pipeline when VAD is off."""
    duration = n_samples / SAMPLE_RATE
    starts = range(0, int(duration) + 1, BATCH_CHUNK_S)
    return [{"start": s, "end": min(s + BATCH_CHUNK_S, duration)} for s in starts if s < duration]


def transcribe(
    model: LoadedModel,
    audio: Samples,
    options: TranscribeOptions,
    settings: EngineSettings,
    progress: ProgressCallback | None = None,
) -> Transcript:
    """Transcribe (or translate to English) 16 kHz mono ``audio`` with ``model``."""
    opts = options.resolved(settings)
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
    duration = len(audio) / SAMPLE_RATE
    batched = _use_batched(opts, duration, settings)
    vad = _vad_options(opts, batched)
    if opts.language is None:
        language, probability, _ = detect_language(model, audio, settings.language_windows, vad)
    else:
        language, probability = opts.language, 1.0
    common: dict[str, Any] = {
        "language": language,
        "task": opts.task,
        "beam_size": opts.beam_size,
        "temperature": list(opts.temperature),
        "initial_prompt": opts.initial_prompt,
        "hotwords": opts.hotwords,
        "word_timestamps": opts.word_timestamps,
        "condition_on_previous_text": opts.condition_on_previous_text,
        "vad_filter": opts.vad,
        "vad_parameters": vad,
    }
    if batched:
        if not opts.vad:
            common["clip_timestamps"] = _fixed_clips(len(audio))
        segments_iter, _ = model.batched.transcribe(
            audio, batch_size=opts.batch_size, without_timestamps=False, **common
        )
    else:
        segments_iter, _ = model.whisper.transcribe(audio, **common)

    script = opts.zh_script if language in CHINESE else "as-is"
    segments: list[Segment] = []
    last_start = 0.0
    for seg in segments_iter:
        start = min(max(seg.start, last_start), duration)
        end = min(max(seg.end, start), duration)
        last_start = start
        words = None
        if seg.words is not None:
            words = [
                Word(
                    start=min(max(w.start, start), end),
                    end=min(max(w.end, w.start, start), end),
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
    recorded = opts.model_dump(mode="json")
    recorded.update(batched=batched, device=model.device, compute_type=model.compute_type)
    return Transcript(
        task=opts.task,
        language=language,
        language_probability=round(probability, 4),
        duration=duration,
        segments=segments,
        model=ModelRef(name=model.info.name, sha256=model.info.sha256),
        options=recorded,
    )
