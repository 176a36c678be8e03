"""Language detection over several windows spread across the speech, not only the first 30 s.

Meetings often open with silence, music or a chair speaking another language; Whisper's own
detection looks at the first window only. We take up to N windows of 30 s spread evenly over the
speech (after VAD when it is on), average the language probabilities and report the best.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

from hushscribe.audio import SAMPLE_RATE, Samples
from hushscribe.engine.loader import LoadedModel

WINDOW_S = 30


def window_starts(n_samples: int, max_windows: int) -> list[int]:
    """Start offsets of up to ``max_windows`` 30 s windows spread evenly over ``n_samples``."""
    window = WINDOW_S * SAMPLE_RATE
    if n_samples <= window:
        return [0]
    count = min(max_windows, -(-n_samples // window))
    last = n_samples - window
    return sorted({round(i * last / (count - 1)) for i in range(count)}) if count > 1 else [0]


def speech_chunks(audio: Samples, vad: VadOptions) -> list[dict[str, int]]:
    """Silero VAD's speech regions, in samples."""
    return list(get_speech_timestamps(audio, vad))


def speech_only(audio: Samples, chunks: list[dict[str, int]]) -> Samples:
    """The speech regions of ``audio`` back to back (what Whisper sees when VAD is on)."""
    if not chunks:
        return audio[:0]
    pieces, _ = collect_chunks(audio, chunks)
    return np.concatenate(pieces) if pieces else audio[:0]


FULL_FEATURES_MAX_S = 120
"""Up to this much speech, the first detection window is cut from the features of all of it,
exactly as the decoder cuts its first window, so the decoder reuses that encoding (Whisper's
log-mel is scaled by the loudest frame of the whole input, so a window computed alone differs).
Beyond it, computing every frame once more costs more than the encoder pass it saves."""


def window_features(whisper: WhisperModel, audio: Samples) -> np.ndarray:
    """The first window of ``audio`` as faster-whisper's decoder encodes it: log-mel features,
    at most 30 s of content frames, padded to the window."""
    features: np.ndarray = whisper.feature_extractor(audio)
    content = features.shape[-1] - 1
    window: np.ndarray = pad_or_trim(
        features[:, : min(whisper.feature_extractor.nb_max_frames, content)]
    )
    return window


def language_probabilities(results: list[tuple[str, float]]) -> dict[str, float]:
    """CTranslate2's ``[("<|en|>", p), …]`` for one window → ``{"en": p, …}``."""
    return {token[2:-2]: probability for token, probability in results}


def detect_language(
    model: LoadedModel, speech: Samples, max_windows: int
) -> tuple[str, float, dict[str, float]]:
    """(language, probability, all probabilities) averaged over windows spread over ``speech``."""
    if not model.info.multilingual:
        return "en", 1.0, {"en": 1.0}
    whisper = model.whisper
    window = WINDOW_S * SAMPLE_RATE
    totals: dict[str, float] = defaultdict(float)
    starts = window_starts(len(speech), max_windows)
    for start in starts:
        whole = start == 0 and len(speech) <= FULL_FEATURES_MAX_S * SAMPLE_RATE
        features = window_features(whisper, speech if whole else speech[start : start + window])
        results = whisper.model.detect_language(whisper.encode(features))[0]
        for lang, p in language_probabilities(results).items():
            totals[lang] += p / len(starts)
    best = max(totals, key=lambda k: totals[k])
    return best, totals[best], dict(totals)
