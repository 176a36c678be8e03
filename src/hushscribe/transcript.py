"""The canonical transcript every layer stores, and its renderers (txt, srt, vtt, json,
verbose_json, tsv).

A :class:`Transcript` records what was said and how it was produced (model name, the SHA-256 of
its ``model.bin``, every option), so a stored result can always be traced to its model.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, Field

from hushscribe.languages import LANGUAGES

Task = Literal["transcribe", "translate"]


class Word(BaseModel):
    start: float
    end: float
    word: str
    probability: float
    speaker: str | None = Field(None, description="The id of the speaker (a Speaker's id).")


class Segment(BaseModel):
    id: int
    start: float
    end: float
    text: str
    words: list[Word] | None = None
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    compression_ratio: float = 0.0
    temperature: float = 0.0
    tokens: list[int] = Field(default_factory=list)
    speaker: str | None = Field(None, description="The id of the speaker (a Speaker's id).")


class Speaker(BaseModel):
    """One voice found by diarization: a stable id ("Speaker 1") and the name shown for it."""

    id: str
    name: str


class FallbackRef(BaseModel):
    """A model passed over on the way to the one that produced a transcript."""

    model: str
    reason: str = Field(description="missing, damaged, load_failed, out_of_memory, "
                        "memory_budget or queue_wait")  # fmt: skip
    detail: str = ""


class ModelRef(BaseModel):
    """Which model produced a transcript (and, after a fallback, which was asked for)."""

    name: str
    sha256: str = Field(description="SHA-256 of the model's model.bin")
    requested: str | None = Field(None, description="The model or alias the request named.")
    fallbacks: list[FallbackRef] = Field(default_factory=list)


class Transcript(BaseModel):
    task: Task
    language: str
    language_probability: float
    duration: float
    segments: list[Segment]
    model: ModelRef
    options: dict[str, Any] = Field(default_factory=dict)
    speakers: list[Speaker] | None = Field(None, description="Set by diarization, in order of "
                                           "first appearance.")  # fmt: skip
    diarization_error: str | None = Field(None, description="Why speakers were asked for and "
                                          "not found; the transcript stands.")  # fmt: skip

    @property
    def text(self) -> str:
        return _join(s.text for s in self.segments)

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in (s.words or [])]

    def speaker_names(self) -> dict[str, str]:
        """Speaker id → the name shown (empty without diarization)."""
        return {sp.id: sp.name for sp in self.speakers or []}


SPEAKER_NAME_MAX = 80  # characters: a person's name or a role, never a paragraph


def clean_speaker_name(name: str) -> str:
    """A name fit for every format: one line, no control characters, 1–80 characters."""
    cleaned = " ".join("".join(c if c.isprintable() else " " for c in name).split())
    if not cleaned:
        raise ValueError("a speaker name must not be empty")
    if len(cleaned) > SPEAKER_NAME_MAX:
        raise ValueError(f"a speaker name has at most {SPEAKER_NAME_MAX} characters")
    return cleaned


def rename_speakers(t: Transcript, names: dict[str, str]) -> Transcript:
    """A copy of ``t`` whose speakers (by id) carry the given names; unknown ids are an error."""
    known = t.speaker_names()
    unknown = sorted(set(names) - set(known))
    if unknown:
        choices = ", ".join(known) or "none: the transcript has no speakers"
        raise ValueError(f"unknown speaker {unknown[0]!r}; the transcript's speakers: {choices}")
    new = {sid: clean_speaker_name(name) for sid, name in names.items()}
    speakers = [Speaker(id=sp.id, name=new.get(sp.id, sp.name)) for sp in t.speakers or []]
    return t.model_copy(update={"speakers": speakers})


def _join(parts: Any) -> str:
    return " ".join(p.strip() for p in parts if p.strip())


def _clock(seconds: float, sep: str, hours_always: bool = True) -> str:
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    if hours or hours_always:
        return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{ms:03d}"
    return f"{minutes:02d}:{secs:02d}{sep}{ms:03d}"


def _cue_text(text: str) -> str:
    # A blank line ends a cue in SRT and VTT; "-->" would start a new timing line.
    lines = [ln.strip() for ln in text.strip().replace("-->", "->").splitlines() if ln.strip()]
    return "\n".join(lines) or "…"


def _speaker_of(names: dict[str, str], speaker_id: str | None) -> str | None:
    # An id missing from the list (it should not be) still shows, as itself.
    return None if speaker_id is None else names.get(speaker_id, speaker_id)


def render_txt(t: Transcript) -> str:
    if not t.speakers:
        return "".join(f"{s.text.strip()}\n" for s in t.segments if s.text.strip())
    # One paragraph per turn: consecutive segments of one speaker joined, "NAME: text".
    names = t.speaker_names()
    turns: list[tuple[str | None, list[str]]] = []
    for s in t.segments:
        if not s.text.strip():
            continue
        who = _speaker_of(names, s.speaker)
        if turns and turns[-1][0] == who:
            turns[-1][1].append(s.text)
        else:
            turns.append((who, [s.text]))
    paragraphs = [f"{who}: {_join(texts)}" if who else _join(texts) for who, texts in turns]
    return "".join(f"{p}\n\n" for p in paragraphs).removesuffix("\n")


def render_srt(t: Transcript) -> str:
    names = t.speaker_names()
    cues = []
    for i, s in enumerate(t.segments, start=1):
        text = _cue_text(s.text)
        who = _speaker_of(names, s.speaker)
        if who:
            text = f"[{who}] {text}"
        cues.append(f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{text}\n")
    return "\n".join(cues)


def render_vtt(t: Transcript) -> str:
    names = t.speaker_names()
    cues = []
    for s in t.segments:
        text = _cue_text(s.text)
        who = _speaker_of(names, s.speaker)
        if who:  # a voice span: players show the name, parsers read it as the cue's voice
            text = f"<v {html.escape(who, quote=False)}>{text}"
        cues.append(f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{text}\n")
    return "WEBVTT\n\n" + "\n".join(cues)


def render_tsv(t: Transcript) -> str:
    # The speaker column comes last, so readers that take the third column as text still do.
    names = t.speaker_names() if t.speakers else None
    rows = ["start\tend\ttext\tspeaker" if names is not None else "start\tend\ttext"]
    for s in t.segments:
        text = " ".join(s.text.split())  # no tab or newline inside a field
        row = f"{round(s.start * 1000)}\t{round(s.end * 1000)}\t{text}"
        if names is not None:
            row += "\t" + " ".join((_speaker_of(names, s.speaker) or "").split())
        rows.append(row)
    return "\n".join(rows) + "\n"


def render_json(t: Transcript) -> str:
    """OpenAI's ``json`` response: the text only."""
    return json.dumps({"text": t.text}, ensure_ascii=False)


def verbose_json(t: Transcript) -> dict[str, Any]:
    """OpenAI's ``verbose_json`` shape plus our provenance fields (OpenAI clients keep extras)."""
    body: dict[str, Any] = {
        "task": t.task,
        "language": LANGUAGES.get(t.language, t.language),
        "duration": round(t.duration, 3),
        "text": t.text,
        "segments": [
            {
                "id": s.id,
                "seek": 0,
                "start": round(s.start, 3),
                "end": round(s.end, 3),
                "text": s.text,
                "tokens": s.tokens,
                "temperature": s.temperature,
                "avg_logprob": s.avg_logprob,
                "compression_ratio": s.compression_ratio,
                "no_speech_prob": s.no_speech_prob,
            }
            for s in t.segments
        ],
        "language_code": t.language,
        "language_probability": t.language_probability,
        "model": t.model.model_dump(exclude_defaults=True),  # fallbacks only when there were
        "options": t.options,
    }
    if any(s.words for s in t.segments):
        body["words"] = [
            {"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3)} for w in t.words
        ]
    if t.speakers:
        _add_speakers(t, body)
    if t.diarization_error:
        body["diarization_error"] = t.diarization_error
    return body


def _add_speakers(t: Transcript, body: dict[str, Any]) -> None:
    """``speaker`` (the name shown) and ``speaker_id`` on segments and words, and the list."""
    names = t.speaker_names()
    for seg, s in zip(body["segments"], t.segments, strict=True):
        seg["speaker"] = _speaker_of(names, s.speaker)
        seg["speaker_id"] = s.speaker
    if "words" in body:
        for word, w in zip(body["words"], t.words, strict=True):
            word["speaker"] = _speaker_of(names, w.speaker)
            word["speaker_id"] = w.speaker
    body["speakers"] = [sp.model_dump() for sp in t.speakers or []]


def render_verbose_json(t: Transcript) -> str:
    return json.dumps(verbose_json(t), ensure_ascii=False)


RENDERERS: dict[str, Callable[[Transcript], str]] = {
    "txt": render_txt,
    "text": render_txt,
    "srt": render_srt,
    "vtt": render_vtt,
    "json": render_json,
    "verbose_json": render_verbose_json,
    "tsv": render_tsv,
}

MEDIA_TYPES: dict[str, str] = {
    "txt": "text/plain; charset=utf-8",
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
    "json": "application/json",
    "verbose_json": "application/json",
    "tsv": "text/tab-separated-values; charset=utf-8",
}

FORMATS: tuple[str, ...] = ("txt", "srt", "vtt", "json", "verbose_json", "tsv")
"""Output formats by name (``text`` is OpenAI's alias of ``txt``)."""


def render(t: Transcript, fmt: str) -> str:
    try:
        return RENDERERS[fmt](t)
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}") from None
