"""The real speech in ../shared/speech (read-only) and how to score transcripts against it."""

from __future__ import annotations

import csv
import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jiwer
from whisper_normalizer.basic import BasicTextNormalizer
from whisper_normalizer.english import EnglishTextNormalizer

SPEECH = Path(__file__).resolve().parents[2] / "shared" / "speech"
CHAR_LANGUAGES = ("zh", "ja", "ko")


@dataclass(frozen=True)
class Clip:
    set: str
    path: Path
    language: str
    duration: float
    reference: str


@cache
def clips() -> tuple[Clip, ...]:
    with (SPEECH / "manifest.tsv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return tuple(
        Clip(
            r["set"],
            SPEECH / r["relative_path"],
            r["language"],
            float(r["duration_seconds"]),
            r["reference_text"],
        )
        for r in rows
    )


def clip(name: str) -> Clip:
    return next(c for c in clips() if c.path.name == name)


_english = EnglishTextNormalizer()
_basic = BasicTextNormalizer()


def normalise(text: str, language: str) -> str:
    if language == "en":
        return str(_english(text))
    out = str(_basic(text))
    if language in CHAR_LANGUAGES:
        out = "".join(ch for ch in out if not ch.isspace() and unicodedata.category(ch)[0] != "P")
    return re.sub(r"\s+", " ", out).strip()


def error_rate(references: list[str], hypotheses: list[str], language: str) -> float:
    """WER (or CER for zh/ja/ko) over a set, after normalising both sides."""
    refs = [normalise(r, language) for r in references]
    hyps = [normalise(h, language) for h in hypotheses]
    if language in CHAR_LANGUAGES:
        return float(jiwer.cer(refs, hyps))
    return float(jiwer.wer(refs, hyps))
