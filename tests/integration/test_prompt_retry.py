"""A window that fails while prompted with earlier text is decoded again without it.

Conditioning on the previous windows' text now and then makes Whisper copy that text instead of
listening (a repetition loop); faster-whisper then samples at higher temperatures with the same
prompt and can accept a copy, losing the words spoken. The retry without the earlier text is what
keeps 12 minutes of one reading repeated 14 times whole (tests/integration/test_long_audio.py);
here it is forced on every window, so that the path runs on any processor.
"""

from __future__ import annotations

import numpy as np
import pytest
from faster_whisper.tokenizer import Tokenizer

from hushscribe import audio
from hushscribe.engine import ModelManager
from hushscribe.engine.prompting import needs_fallback, without_previous_text
from hushscribe.settings import Settings
from tests.speech import clip, normalise


@pytest.fixture(scope="module")
def jfk(settings: Settings) -> np.ndarray:
    return audio.decode(clip("jfk.flac").path, settings.audio).samples


def test_the_prompt_keeps_hotwords_and_the_start_of_transcript(manager: ModelManager) -> None:
    with manager.use("base") as model:
        whisper = model.whisper
        tok = Tokenizer(whisper.hf_tokenizer, True, task="transcribe", language="en")
        earlier = tok.encode(" And so, my fellow Americans")
        prompt = whisper.get_prompt(tok, earlier, hotwords="Kennedy")
        options = whisper_options(hotwords="Kennedy")
        bare = without_previous_text(prompt, tok, options, whisper.max_length)
        assert bare == whisper.get_prompt(tok, [], hotwords="Kennedy")
        plain = whisper.get_prompt(tok, earlier)
        assert without_previous_text(plain, tok, whisper_options(), whisper.max_length) == list(
            tok.sot_sequence
        )
        # Nothing earlier: nothing to retry without.
        assert without_previous_text(list(tok.sot_sequence), tok, whisper_options(), 448) is None
        hot_only = whisper.get_prompt(tok, [], hotwords="Kennedy")
        assert without_previous_text(hot_only, tok, options, whisper.max_length) is None


def test_a_failing_window_is_decoded_again_without_earlier_text(
    manager: ModelManager, jfk: np.ndarray
) -> None:
    """Every decode 'fails' (a compression-ratio threshold no text meets), so every window after
    the first is retried without the earlier text: the retries are counted and the words stay."""
    twice = np.concatenate([jfk, np.zeros(8 * audio.SAMPLE_RATE, np.float32), jfk, jfk])
    with manager.use("base") as model:
        before = model.whisper.prompt_retries
        segments, _ = model.whisper.transcribe(
            twice, language="en", temperature=[0.0], compression_ratio_threshold=0.01,
            condition_on_previous_text=True, vad_filter=False,
        )  # fmt: skip
        text = normalise(" ".join(s.text for s in segments), "en")
        retries = model.whisper.prompt_retries - before
    assert retries >= 1, "no window was decoded again"
    assert text.count("ask not what your country can do for you") == 3, text


def test_what_counts_as_failing_is_faster_whispers_test() -> None:
    class Result:
        no_speech_prob = 0.1

    opts = whisper_options()
    assert needs_fallback((Result(), -0.2, 0.0, 2.6), opts)  # too repetitive
    assert needs_fallback((Result(), -1.5, 0.0, 1.5), opts)  # too unlikely
    assert not needs_fallback((Result(), -0.2, 0.0, 1.5), opts)
    silent = Result()
    silent.no_speech_prob = 0.9
    assert not needs_fallback((silent, -1.5, 0.0, 1.5), opts)  # unlikely, but silence


def whisper_options(hotwords: str | None = None) -> object:
    from faster_whisper.transcribe import TranscriptionOptions

    fields = TranscriptionOptions.__dataclass_fields__
    values: dict[str, object] = {name: None for name in fields}
    values.update(
        compression_ratio_threshold=2.4, log_prob_threshold=-1.0, no_speech_threshold=0.6,
        hotwords=hotwords, prefix=None, temperatures=[0.0, 0.2],
    )  # fmt: skip
    return TranscriptionOptions(**values)
