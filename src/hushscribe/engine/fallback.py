"""Why a model could not serve, and the record of what served instead.

A request names a model or an alias (``models.aliases``: an ordered chain such as large-v3 →
medium → small). The worker takes the first model of the chain that can serve now; every model
it passed over is a :class:`Step` with a reason, kept in the result (``model.fallbacks`` in
verbose_json and the job) and counted in /metrics by reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

from hushscribe.errors import (
    HushscribeError,
    InvalidModel,
    ModelChecksumMismatch,
    ModelNotFound,
    ModelOverBudget,
)

Reason = Literal[
    "missing", "damaged", "load_failed", "out_of_memory", "memory_budget", "queue_wait"
]
REASONS: Final[tuple[Reason, ...]] = (
    "missing", "damaged", "load_failed", "out_of_memory", "memory_budget", "queue_wait"
)  # fmt: skip

_OOM_WORDS = (
    "out of memory",
    "cuda_error_out_of_memory",
    "cublas_status_alloc_failed",
    "bad_alloc",
    "cannot allocate memory",
    "failed to allocate",
)


def is_out_of_memory(exc: BaseException) -> bool:
    """A device or host allocation that failed (CTranslate2 raises RuntimeError with CUDA's or
    the allocator's words; Python raises MemoryError)."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError | OSError) and any(w in text for w in _OOM_WORDS)


def reason_of(exc: BaseException) -> Reason:
    """The fallback reason for an error met while loading a model."""
    if isinstance(exc, ModelNotFound):
        return "missing"
    if isinstance(exc, ModelChecksumMismatch | InvalidModel):
        return "damaged"
    if isinstance(exc, ModelOverBudget):
        return "memory_budget"
    if is_out_of_memory(exc) or getattr(exc, "out_of_memory", False):
        return "out_of_memory"
    return "load_failed"


@dataclass(frozen=True)
class Step:
    """A model passed over, and why."""

    model: str
    reason: Reason
    detail: str = ""

    def as_json(self) -> dict[str, str]:
        return {"model": self.model, "reason": self.reason, "detail": self.detail}


@dataclass
class Choice:
    """What serves a request: the requested name (model or alias), the model chosen, and the
    models passed over on the way."""

    requested: str
    model: str
    fallbacks: list[Step] = field(default_factory=list)


class NoModelCanServe(HushscribeError):
    """Every model of a request's chain failed; the message says why for each."""

    code = "model_unavailable"
    status = 503

    def __init__(self, requested: str, steps: list[Step], last: HushscribeError | None) -> None:
        if len(steps) == 1 and last is not None:
            message = last.message  # a plain model: its own error, as before aliases existed
        else:
            tried = "; ".join(f"{s.model}: {s.reason} ({s.detail})" for s in steps)
            message = f"no model of '{requested}' can serve now — {tried}"
        super().__init__(message)
        self.steps = steps
        self.last_code = last.code if last is not None else self.code


def detail_of(exc: BaseException) -> str:
    text = exc.message if isinstance(exc, HushscribeError) else f"{type(exc).__name__}: {exc}"
    return text[:300]
