"""LocalAgreement-2: which words of a growing live buffer are final.

The stream's buffer is decoded again at every step, from its start (Macháček, Dabre & Bojar,
"Turning Whisper into Real-Time Transcription System", 2023). The words that the last two
decodes agree on, after the words already confirmed, are confirmed: the longest common prefix
of the two hypotheses, compared on normalised text. A confirmed word is never taken back; the
rest of the latest hypothesis is the tentative tail.

Each decode covers the whole buffer, so it starts with words confirmed before. They are found by
time (words that start before the last confirmed word ended belong to it) and, since word times
move a little between decodes, by text: where the hypothesis repeats the last confirmed words
(up to five) close to the time they ended, it is cut after them.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

NGRAM = 5
"""Up to this many of the last confirmed words are looked for at the start of a hypothesis."""
NEAR_S = 1.0
"""A repeat of the confirmed words counts only this close to where they ended."""
TIME_SLACK_S = 0.1
"""Word times move a little between decodes: a word is new when it starts after the last
confirmed word's end less this."""
SHIFT = 2
"""Matched on text, the cut may move this many words from where the times put it."""


@dataclass(frozen=True)
class TimedWord:
    start: float
    """Seconds on the stream's clock."""
    end: float
    text: str
    """As decoded, with its leading space where the language has one."""


def normalise(text: str) -> str:
    """A word as compared: case, punctuation and spacing ignored."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    kept = "".join(ch for ch in folded if unicodedata.category(ch)[0] not in "PSZC")
    return kept or re.sub(r"\s+", "", folded)


def same(a: list[TimedWord], b: list[TimedWord]) -> bool:
    return len(a) == len(b) and all(
        normalise(x.text) == normalise(y.text) for x, y in zip(a, b, strict=True)
    )


def common_prefix(a: list[TimedWord], b: list[TimedWord]) -> int:
    """How many words ``a`` and ``b`` start with in common."""
    n = 0
    while n < min(len(a), len(b)) and normalise(a[n].text) == normalise(b[n].text):
        n += 1
    return n


class LocalAgreement:
    """The confirmed words of one stream and the tentative tail of its last hypothesis.

    Holds only the last few confirmed words (to recognise them in the next hypothesis) and the
    tail: its memory does not grow with the stream."""

    def __init__(self, start: float = 0.0) -> None:
        self.last_end = start
        """End of the last confirmed word (or where the stream's text starts)."""
        self.recent: list[TimedWord] = []
        """The last ``NGRAM`` confirmed words."""
        self.tail: list[TimedWord] = []
        """The last hypothesis after the confirmed words: not confirmed yet."""

    def new_words(self, words: list[TimedWord]) -> list[TimedWord]:
        """The words of a hypothesis of the whole buffer that come after the confirmed ones."""
        fresh = next(
            (i for i, w in enumerate(words) if w.start > self.last_end - TIME_SLACK_S), len(words)
        )
        best: tuple[int, float, int] | None = None  # (matched words, distance, cut)
        for cut in range(len(words) + 1):
            ended = words[cut - 1].end if cut else self.last_end
            if abs(ended - self.last_end) > NEAR_S:
                continue
            for n in range(min(NGRAM, cut, len(self.recent)), 0, -1):
                if same(words[cut - n : cut], self.recent[-n:]):
                    candidate = (n, -abs(ended - self.last_end), cut)
                    if best is None or candidate[:2] > best[:2]:
                        best = candidate
                    break
        if best is not None and abs(best[2] - fresh) <= SHIFT:
            return words[best[2] :]
        return words[fresh:]

    def insert(self, words: list[TimedWord]) -> list[TimedWord]:
        """Take the next hypothesis of the whole buffer; return the words it confirms."""
        new = self.new_words(words)
        n = common_prefix(self.tail, new)
        self._confirm(new[:n])
        self.tail = new[n:]
        return new[:n]

    def flush(self, words: list[TimedWord]) -> list[TimedWord]:
        """Take the turn's final hypothesis: everything in it after the confirmed words is
        confirmed."""
        new = self.new_words(words)
        self._confirm(new)
        self.tail = []
        return new

    def force(self, until: float) -> list[TimedWord]:
        """Confirm the tail's words that end by ``until`` (the buffer must be cut there and no
        two decodes agreed on them)."""
        n = 0
        while n < len(self.tail) and self.tail[n].end <= until:
            n += 1
        taken = self.tail[:n]
        self._confirm(taken)
        self.tail = self.tail[n:]
        return taken

    def skip_to(self, time: float) -> None:
        """Audio before ``time`` is gone without its words: the tail before it is dropped."""
        self.last_end = max(self.last_end, time)
        self.tail = [w for w in self.tail if w.start >= time]

    def _confirm(self, words: list[TimedWord]) -> None:
        if not words:
            return
        self.recent = (self.recent + words)[-NGRAM:]
        self.last_end = max(self.last_end, words[-1].end)
