"""Transcription options from untrusted input, and where language windows fall."""

from __future__ import annotations

import pytest

from hushscribe.audio import SAMPLE_RATE
from hushscribe.engine import make_options
from hushscribe.engine.language import window_starts
from hushscribe.errors import InvalidOption
from hushscribe.settings import EngineSettings


def test_language_names_and_codes() -> None:
    assert make_options(language="German").language == "de"
    assert make_options(language="ZH").language == "zh"
    assert make_options(language="auto").language is None
    with pytest.raises(InvalidOption, match="unknown language 'xx'"):
        make_options(language="xx")


@pytest.mark.parametrize(
    "values",
    [{"beam_size": 0}, {"temperature": (2.0,)}, {"initial_prompt": "x" * 1001},
     {"task": "summarise"}, {"surprise": True}, {"zh_script": "cyrillic"}],
)  # fmt: skip
def test_bad_values_are_typed_errors(values: dict[str, object]) -> None:
    with pytest.raises(InvalidOption, match="invalid option"):
        make_options(**values)


def test_resolved_fills_settings() -> None:
    opts = make_options().resolved(EngineSettings(beam_size=3, zh_script="traditional"))
    assert (opts.beam_size, opts.zh_script, opts.batch_size) == (3, "traditional", 8)


def test_windows_spread_over_the_file() -> None:
    minute = 60 * SAMPLE_RATE
    assert window_starts(10 * SAMPLE_RATE, 5) == [0]
    starts = window_starts(60 * minute, 5)
    assert len(starts) == 5 and starts[0] == 0 and starts[-1] == 60 * minute - 30 * SAMPLE_RATE
    assert window_starts(45 * SAMPLE_RATE, 5) == [0, 15 * SAMPLE_RATE]


def test_one_language_window_per_five_minutes_of_speech() -> None:
    from hushscribe.engine.transcriber import language_windows

    assert [language_windows(s, 5) for s in (3, 60, 299, 301, 900, 3600)] == [1, 1, 1, 2, 3, 5]
    assert language_windows(3600, 2) == 2
