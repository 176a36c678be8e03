"""The canonical transcript every layer stores, and its renderers (txt, srt, vtt, json,
verbose_json, tsv).

A :class:`Transcript` records what was said and how it was produced (model name, the SHA-256 of
its ``model.bin``, every option), so a stored result can always be traced to its model.
"""

from __future__ import annotations

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

    @property
    def text(self) -> str:
        return _join(s.text for s in self.segments)

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in (s.words or [])]


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


def render_txt(t: Transcript) -> str:
    return "".join(f"{s.text.strip()}\n" for s in t.segments if s.text.strip())


def render_srt(t: Transcript) -> str:
    cues = [
        f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{_cue_text(s.text)}\n"
        for i, s in enumerate(t.segments, start=1)
    ]
    return "\n".join(cues)


def render_vtt(t: Transcript) -> str:
    cues = [
        f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{_cue_text(s.text)}\n"
        for s in t.segments
    ]
    return "WEBVTT\n\n" + "\n".join(cues)


def render_tsv(t: Transcript) -> str:
    rows = ["start\tend\ttext"]
    for s in t.segments:
        text = " ".join(s.text.split())  # no tab or newline inside a field
        rows.append(f"{round(s.start * 1000)}\t{round(s.end * 1000)}\t{text}")
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
    return body


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
