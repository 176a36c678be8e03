"""Scoring speaker diarization: DER with a collar and the best speaker mapping (Hungarian
algorithm, no scipy), and how many true speaker changes were found near where they are.

DER = (missed speech + false alarm + speaker confusion) / scored speech, on a 10 ms grid, with
no scoring within ``collar`` of any reference turn boundary (as NIST md-eval's ``-c 0.25``).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Protocol

import numpy as np

COLLAR_S = 0.25
CHANGE_S = 0.5
STEP_S = 0.01


class Span(Protocol):
    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...
    @property
    def speaker(self) -> int: ...


def hungarian(cost: np.ndarray) -> list[tuple[int, int]]:
    """Rows matched to columns at least total cost (rectangular allowed): (row, column) pairs."""
    flip = cost.shape[0] > cost.shape[1]
    c = cost.T if flip else cost
    n, m = c.shape
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    p, way = np.zeros(m + 1, dtype=int), np.zeros(m + 1, dtype=int)
    for i in range(1, n + 1):
        p[0], j0 = i, 0
        minv, used = np.full(m + 1, np.inf), np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0, delta, j1 = p[j0], np.inf, 0
            for j in range(1, m + 1):
                if not used[j]:
                    cur = c[i0 - 1, j - 1] - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j], way[j] = cur, j0
                    if minv[j] < delta:
                        delta, j1 = minv[j], j
            for j in range(m + 1):
                if used[j]:
                    u[p[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    pairs = [(int(p[j]) - 1, j - 1) for j in range(1, m + 1) if p[j]]
    return sorted((b, a) for a, b in pairs) if flip else sorted(pairs)


def _grid(spans: Sequence[Span], n: int, speakers: list[int]) -> np.ndarray:
    """(speakers, frames) booleans: who speaks in each 10 ms frame."""
    out = np.zeros((len(speakers), n), dtype=bool)
    index = {s: i for i, s in enumerate(speakers)}
    for s in spans:
        out[index[s.speaker], round(s.start / STEP_S) : round(s.end / STEP_S)] = True
    return out


def der(
    reference: Sequence[Span], hypothesis: Sequence[Span], collar: float = COLLAR_S
) -> dict[str, float]:
    """DER and its parts (seconds) of ``hypothesis`` against ``reference``."""
    end = max([s.end for s in [*reference, *hypothesis]], default=0.0)
    n = round(end / STEP_S) + 1
    ref_ids = sorted({s.speaker for s in reference})
    hyp_ids = sorted({s.speaker for s in hypothesis})
    ref, hyp = _grid(reference, n, ref_ids), _grid(hypothesis, n, hyp_ids)
    scored = np.ones(n, dtype=bool)
    c = round(collar / STEP_S)
    for s in reference:
        for edge in (round(s.start / STEP_S), round(s.end / STEP_S)):
            scored[max(0, edge - c) : edge + c] = False
    ref, hyp = ref[:, scored], hyp[:, scored]
    n_ref, n_hyp = ref.sum(axis=0), hyp.sum(axis=0)
    overlap = ref.astype(np.int64) @ hyp.T.astype(np.int64)  # frames both speak
    mapping = hungarian(-overlap) if ref_ids and hyp_ids else []
    correct = np.zeros(ref.shape[1], dtype=np.int64)
    for r, h in mapping:
        correct += ref[r] & hyp[h]
    total = float(n_ref.sum())
    missed = float(np.maximum(n_ref - n_hyp, 0).sum())
    false_alarm = float(np.maximum(n_hyp - n_ref, 0).sum())
    confusion = float((np.minimum(n_ref, n_hyp) - correct).sum())
    return {
        "der": (missed + false_alarm + confusion) / total if total else 0.0,
        "scored_s": total * STEP_S,
        "missed_s": missed * STEP_S,
        "false_alarm_s": false_alarm * STEP_S,
        "confusion_s": confusion * STEP_S,
    }


def changes_found(
    reference: Sequence[Span], hypothesis: Sequence[Span], tolerance: float = CHANGE_S
) -> tuple[int, int]:
    """How many of the reference's speaker changes (the pause between two turns) have a found
    change within ``tolerance`` of them, and how many there are."""
    truth = [(a.end, b.start) for a, b in pairwise(reference) if a.speaker != b.speaker]
    found = [(a.end + b.start) / 2 for a, b in pairwise(hypothesis) if a.speaker != b.speaker]
    near = sum(any(e - tolerance <= f <= s + tolerance for f in found) for e, s in truth)
    return near, len(truth)
