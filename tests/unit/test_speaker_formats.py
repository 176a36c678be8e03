"""Speaker labels in every output format: each parses with a real parser of its format, a rename
shows everywhere, and a transcript without speakers renders exactly as before diarization."""

from __future__ import annotations

import csv
import html
import io
import json

import pytest
import srt
import webvtt

from hushscribe.transcript import (
    FORMATS,
    ModelRef,
    Segment,
    Speaker,
    Transcript,
    Word,
    rename_speakers,
    render,
)


def _word(start: float, end: float, text: str, speaker: str | None) -> Word:
    return Word(start=start, end=end, word=text, probability=0.9, speaker=speaker)


def make(speakers: bool = True) -> Transcript:
    """Two people: A opens (two segments), B answers, A closes."""
    who = (lambda s: s) if speakers else (lambda s: None)
    rows = [
        (0.0, 2.5, " Good morning, everyone.", "Speaker 1"),
        (2.5, 4.0, " Let us begin.", "Speaker 1"),
        (4.5, 6.0, " Thank you.", "Speaker 2"),
        (6.5, 7.5, " First item.", "Speaker 1"),
    ]
    segments = []
    for i, (start, end, text, speaker) in enumerate(rows):
        words = text.split()
        step = (end - start) / len(words)
        segments.append(Segment(
            id=i, start=start, end=end, text=text, speaker=who(speaker),
            words=[_word(start + k * step, start + (k + 1) * step, f" {w}", who(speaker))
                   for k, w in enumerate(words)],
        ))  # fmt: skip
    return Transcript(
        task="transcribe", language="en", language_probability=0.98, duration=7.5,
        segments=segments, model=ModelRef(name="tiny", sha256="a" * 64),
        options={"beam_size": 5},
        speakers=[Speaker(id="Speaker 1", name="Speaker 1"), Speaker(id="Speaker 2",
                  name="Speaker 2")] if speakers else None,
    )  # fmt: skip


ORDER = ["Speaker 1", "Speaker 1", "Speaker 2", "Speaker 1"]


def test_srt_cues_start_with_the_speaker() -> None:
    cues = list(srt.parse(render(make(), "srt")))
    assert [c.content for c in cues] == [
        "[Speaker 1] Good morning, everyone.",
        "[Speaker 1] Let us begin.",
        "[Speaker 2] Thank you.",
        "[Speaker 1] First item.",
    ]
    assert cues[2].start.total_seconds() == 4.5


def test_vtt_cues_carry_a_voice() -> None:
    captions = webvtt.from_string(render(make(), "vtt")).captions
    assert [c.voice for c in captions] == ORDER
    assert [c.text for c in captions] == [
        "Good morning, everyone.", "Let us begin.", "Thank you.", "First item.",
    ]  # fmt: skip


def test_txt_is_one_paragraph_per_turn() -> None:
    text = render(make(), "txt")
    assert text.split("\n\n") == [
        "Speaker 1: Good morning, everyone. Let us begin.",
        "Speaker 2: Thank you.",
        "Speaker 1: First item.\n",
    ]


def test_tsv_has_a_speaker_column() -> None:
    rows = list(csv.DictReader(io.StringIO(render(make(), "tsv")), delimiter="\t"))
    assert [r["speaker"] for r in rows] == ORDER
    assert rows[2] == {"start": "4500", "end": "6000", "text": "Thank you.", "speaker": "Speaker 2"}


def test_verbose_json_has_speakers_on_segments_and_words() -> None:
    body = json.loads(render(make(), "verbose_json"))
    assert body["speakers"] == [
        {"id": "Speaker 1", "name": "Speaker 1"}, {"id": "Speaker 2", "name": "Speaker 2"},
    ]  # fmt: skip
    assert [s["speaker"] for s in body["segments"]] == ORDER
    assert [w["speaker"] for w in body["words"]][5:8] == ["Speaker 1", "Speaker 2", "Speaker 2"]
    assert json.loads(render(make(), "json")) == {
        "text": "Good morning, everyone. Let us begin. Thank you. First item."
    }


def test_a_rename_shows_in_every_format() -> None:
    t = rename_speakers(make(), {"Speaker 2": "  Li Wei <Chair> & co\n"})
    name = "Li Wei <Chair> & co"  # one line, spaces tidied
    assert [c.content for c in srt.parse(render(t, "srt"))][2] == f"[{name}] Thank you."
    # The voice is escaped as WebVTT asks (character references, which players decode).
    voices = [html.unescape(c.voice) for c in webvtt.from_string(render(t, "vtt")).captions]
    assert voices[2] == name
    assert f"\n\n{name}: Thank you.\n\n" in render(t, "txt")
    tsv = list(csv.DictReader(io.StringIO(render(t, "tsv")), delimiter="\t"))
    assert tsv[2]["speaker"] == name
    body = json.loads(render(t, "verbose_json"))
    assert body["segments"][2]["speaker"] == name
    assert body["segments"][2]["speaker_id"] == "Speaker 2"  # the id stays: renames again work
    assert body["speakers"][1] == {"id": "Speaker 2", "name": name}
    again = rename_speakers(Transcript.model_validate_json(t.model_dump_json()), {"Speaker 2": "B"})
    assert "[B] Thank you." in render(again, "srt")


def test_vtt_escapes_a_name_that_would_end_the_voice_tag() -> None:
    t = rename_speakers(make(), {"Speaker 1": "A>B"})
    assert "<v A&gt;B>Good morning" in render(t, "vtt")


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ({"Speaker 9": "X"}, "unknown speaker 'Speaker 9'"),
        ({"Speaker 1": " \t "}, "must not be empty"),
        ({"Speaker 1": "x" * 81}, "at most 80"),
    ],
)
def test_bad_renames_are_refused(names: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rename_speakers(make(), names)


# Rendered by the renderers as they were before diarization existed (same transcript, no
# speakers): the bytes must not change for anyone who does not ask for speakers.
BEFORE = {
    "txt": "Good morning, everyone.\nLet us begin.\nThank you.\nFirst item.\n",
    "srt": "1\n00:00:00,000 --> 00:00:02,500\nGood morning, everyone.\n\n2\n00:00:02,500 --> "
    "00:00:04,000\nLet us begin.\n\n3\n00:00:04,500 --> 00:00:06,000\nThank you.\n\n4\n"
    "00:00:06,500 --> 00:00:07,500\nFirst item.\n",
    "vtt": "WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nGood morning, everyone.\n\n00:00:02.500 --> "
    "00:00:04.000\nLet us begin.\n\n00:00:04.500 --> 00:00:06.000\nThank you.\n\n00:00:06.500 "
    "--> 00:00:07.500\nFirst item.\n",
    "json": '{"text": "Good morning, everyone. Let us begin. Thank you. First item."}',
    "tsv": "start\tend\ttext\n0\t2500\tGood morning, everyone.\n2500\t4000\tLet us begin.\n"
    "4500\t6000\tThank you.\n6500\t7500\tFirst item.\n",
}


def test_without_speakers_every_format_is_as_before() -> None:
    t = make(speakers=False)
    for fmt, expected in BEFORE.items():
        assert render(t, fmt) == expected, fmt
    body = json.loads(render(t, "verbose_json"))
    assert "speakers" not in body and "diarization_error" not in body
    assert all("speaker" not in s for s in body["segments"])
    assert all("speaker" not in w for w in body["words"])
    assert set(FORMATS) == {*BEFORE, "verbose_json"}


def test_a_transcript_stored_before_diarization_still_loads() -> None:
    stored = make(speakers=False).model_dump(exclude={"speakers", "diarization_error"})
    for seg in stored["segments"]:
        seg.pop("speaker")
        for w in seg["words"]:
            w.pop("speaker")
    t = Transcript.model_validate(stored)
    assert t.speakers is None and render(t, "txt") == BEFORE["txt"]
    with pytest.raises(ValueError, match="the transcript has no speakers"):
        rename_speakers(t, {"Speaker 1": "A"})


def test_a_diarization_error_is_reported_in_verbose_json_only() -> None:
    t = make(speakers=False).model_copy(update={"diarization_error": "no speaker model"})
    assert json.loads(render(t, "verbose_json"))["diarization_error"] == "no speaker model"
    assert render(t, "srt") == BEFORE["srt"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"num_speakers": 2}, "need diarize=true"),
        ({"diarize": True, "num_speakers": 2, "max_speakers": 3}, "not both"),
        ({"diarize": True, "min_speakers": 4, "max_speakers": 3}, "not be more than"),
        ({"diarize": True, "num_speakers": 0}, "num_speakers"),
        ({"diarize": True, "max_speakers": 21}, "max_speakers"),
    ],
)
def test_speaker_counts_are_checked(values: dict[str, object], message: str) -> None:
    from hushscribe.engine.options import make_options
    from hushscribe.errors import InvalidOption

    with pytest.raises(InvalidOption, match=message):
        make_options(**values)
    assert make_options(diarize=True, min_speakers=2, max_speakers=2).max_speakers == 2
