"""Renderers on hand-made transcripts: the corner cases a real one rarely hits."""

from __future__ import annotations

import srt
import webvtt

from hushscribe.transcript import ModelRef, Segment, Transcript, render


def make(*segments: tuple[float, float, str]) -> Transcript:
    return Transcript(
        task="transcribe",
        language="en",
        language_probability=1.0,
        duration=segments[-1][1] if segments else 0.0,
        segments=[Segment(id=i, start=s, end=e, text=t) for i, (s, e, t) in enumerate(segments)],
        model=ModelRef(name="m", sha256="0" * 64),
    )


def test_hours_and_milliseconds() -> None:
    t = make((3723.456, 3725.0, " hello"))
    assert "01:02:03,456 --> 01:02:05,000" in render(t, "srt")
    assert "01:02:03.456 --> 01:02:05.000" in render(t, "vtt")
    assert render(t, "tsv").splitlines()[1] == "3723456\t3725000\thello"


def test_cue_text_cannot_break_the_file() -> None:
    t = make((0.0, 1.0, "a --> b\n\nc"), (1.0, 2.0, "  "))
    subs = list(srt.parse(render(t, "srt")))
    assert [s.content for s in subs] == ["a -> b\nc", "…"]
    vtt = webvtt.from_string(render(t, "vtt"))
    assert [c.text for c in vtt.captions] == ["a -> b\nc", "…"]


def test_txt_skips_empty_segments() -> None:
    assert render(make((0, 1, " one"), (1, 2, " "), (2, 3, "two ")), "txt") == "one\ntwo\n"


def test_unknown_format() -> None:
    import pytest

    with pytest.raises(ValueError, match="unknown format"):
        render(make((0, 1, "x")), "docx")
