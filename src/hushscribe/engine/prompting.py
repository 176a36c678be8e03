"""A window that fails while conditioned on earlier text is decoded again without that text.

Whisper reads each 30 s window with the previous windows' text as its prompt
(``condition_on_previous_text``), which keeps names and punctuation consistent — and, now and
then, leads the decoder to copy the prompt instead of listening: the window comes back as a
repetition loop ("and only herald to the gaudy spring, and only herald to …"), fails the
compression-ratio or log-probability check, and faster-whisper falls back to sampling at
higher temperatures *with the same prompt*. Sampling sometimes passes the checks with text that
still repeats the prompt, the words actually spoken in that window are lost, and the next window,
conditioned on the copy, copies again. On 12 minutes of one reading repeated 14 times this lost
one repeat in about one run of three.

So when the first, deterministic decode of a window fails and its prompt holds earlier text, the
window's whole fallback ladder is run again from temperature 0 without the earlier text
(hotwords kept). A window that passes at first costs nothing more; one that fails costs one
more decode, before any sampling.
"""

from __future__ import annotations

import dataclasses
from typing import Any

Decoded = tuple[Any, float, float, float]
"""faster-whisper's (result, average log-probability, temperature, compression ratio)."""


def needs_fallback(decoded: Decoded, options: Any) -> bool:
    """faster-whisper's own test of a decode (``generate_with_fallback``): too repetitive, or too
    unlikely unless the window is silence."""
    result, avg_logprob, _temperature, compression_ratio = decoded
    threshold = options.compression_ratio_threshold
    if threshold is not None and compression_ratio > threshold:
        return True
    low = options.log_prob_threshold is not None and avg_logprob < options.log_prob_threshold
    silent = (
        options.no_speech_threshold is not None
        and result.no_speech_prob > options.no_speech_threshold
    )
    return low and not silent


def without_previous_text(
    prompt: list[int], tokenizer: Any, options: Any, max_length: int
) -> list[int] | None:
    """``prompt`` without the earlier windows' text (and the initial prompt), keeping hotwords;
    None when it holds no earlier text. See faster-whisper's ``get_prompt`` for the layout:
    ``[sot_prev, hotwords…, previous…, sot_sequence…, …]``."""
    if not prompt or prompt[0] != tokenizer.sot_prev or tokenizer.sot not in prompt:
        return None
    start = prompt.index(tokenizer.sot)
    hot: list[int] = []
    if options.hotwords and not options.prefix:
        hot = tokenizer.encode(" " + options.hotwords.strip())[: max_length // 2 - 1]
    if start <= 1 + len(hot):
        return None
    head = [tokenizer.sot_prev, *hot] if hot else []
    return head + prompt[start:]


def first_temperature_only(options: Any) -> Any:
    return dataclasses.replace(options, temperatures=list(options.temperatures[:1]))
