"""One row of the doctor's report, and running a check so that its failure stays its own."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from hushscribe.errors import HushscribeError

Status = Literal["OK", "WARN", "FAIL"]
SEVERITY: dict[Status, int] = {"OK": 0, "WARN": 1, "FAIL": 2}

Advance = Callable[[int], None]
ProgressFactory = Callable[[str, int], AbstractContextManager[Advance]]
"""``(label, total bytes)`` → a context manager yielding the callback that counts bytes hashed
(the CLI's progress bar; :func:`no_progress` elsewhere)."""


@dataclass(frozen=True)
class Check:
    """One row: which check, its verdict, what was found, and (for WARN/FAIL) what to do."""

    check: str
    status: Status
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Finding:
    """One problem a check found; a check with several folds them into its row (:func:`fold`)."""

    status: Status
    detail: str
    fix: str = ""


def fold(name: str, findings: list[Finding], ok_detail: str) -> Check:
    """A row from a check's findings: the worst status, the details and fixes of the problems
    (the OK ones are left out when there are problems); ``ok_detail`` when there are none."""
    problems = [f for f in findings if f.status != "OK"]
    if not problems:
        notes = [ok_detail, *(f.detail for f in findings)]
        return Check(name, "OK", "; ".join(n for n in notes if n))
    worst = max(problems, key=lambda f: SEVERITY[f.status]).status
    fixes = list(dict.fromkeys(f.fix for f in problems if f.fix))  # in order, once each
    return Check(name, worst, "; ".join(f.detail for f in problems), "; ".join(fixes))


def worst(checks: Iterable[Check]) -> Status:
    return max((c.status for c in checks), key=SEVERITY.__getitem__, default="OK")


def no_progress(label: str, total: int) -> AbstractContextManager[Advance]:
    return nullcontext(lambda n: None)


def isolated(name: str, check: Callable[[], Check | list[Check]]) -> list[Check]:
    """Run one check; whatever it raises becomes its own FAIL row and the others still run."""
    try:
        result = check()
    except HushscribeError as exc:
        return [Check(name, "FAIL", exc.message)]
    except Exception as exc:  # a broken install is what the doctor is for: report, go on
        return [Check(name, "FAIL", f"the check itself failed: {type(exc).__name__}: {exc}")]
    return result if isinstance(result, list) else [result]


def q(path: Path | str) -> str:
    """``path`` as a shell word, for fixes that are pasted into a shell."""
    return shlex.quote(str(path))


def mode(bits: int) -> str:
    return f"{bits & 0o777:04o}"
