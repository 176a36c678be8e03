"""A deadline for each stage of a job, enforced from outside the worker.

A decoder or a CTranslate2 call stuck inside one native call never returns to Python, so no
check inside the worker can stop it, and its lease thread keeps the job alive forever. The
worker therefore writes, before each stage, a deadline and the jobs it blames into memory it
shares with its supervisor; the supervisor reads it twice a second and, past the deadline, kills
the worker, fails the blamed jobs (no retry: the cause is their input) and starts a new worker.

The shared memory is lock-free (``RawArray``): a worker killed while writing can block nobody.
A torn read is harmless: the deadline is one aligned 8-byte store and is zeroed before the blame
changes, so the supervisor never pairs a passed deadline with jobs it does not belong to.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from multiprocessing.context import SpawnContext
from typing import Any, Final

from hushscribe.errors import DecodeTimeout, HushscribeError, ProcessingTimeout

DECODE: Final = 1
PROCESS: Final = 2
_ERRORS: Final[dict[int, type[HushscribeError]]] = {
    DECODE: DecodeTimeout,
    PROCESS: ProcessingTimeout,
}
_BLAME_BYTES: Final = 1024
"""Room for the ids of the jobs a stage works on (a batch of up to 30 ids of 32 characters)."""


@dataclass(frozen=True)
class Overdue:
    """A stage past its deadline: which error, for which jobs, after how long a limit."""

    error: type[HushscribeError]
    job_ids: list[str]
    limit_s: float


class Watchdog:
    """One worker's deadline. The worker arms and disarms it; the supervisor reads it."""

    def __init__(self, ctx: SpawnContext) -> None:
        self._times: Any = ctx.RawArray("d", 3)  # deadline (epoch s), stage, limit (s)
        self._blame: Any = ctx.RawArray("c", _BLAME_BYTES)

    def arm(self, stage: int, limit_s: float, job_ids: list[str]) -> None:
        """Before a stage: it must end (or arm again) within ``limit_s``."""
        self._times[0] = 0.0
        blame = ",".join(job_ids).encode()[: _BLAME_BYTES - 1]
        self._blame.value = blame
        self._times[1] = float(stage)
        self._times[2] = limit_s
        self._times[0] = time.time() + limit_s

    def disarm(self) -> None:
        self._times[0] = 0.0

    def overdue(self, now: float | None = None) -> Overdue | None:
        """The stage that passed its deadline, if any."""
        deadline = self._times[0]
        if not deadline or (time.time() if now is None else now) < deadline:
            return None
        ids = [i for i in self._blame.value.decode("ascii", "replace").split(",") if i]
        error = _ERRORS.get(int(self._times[1]), ProcessingTimeout)
        return Overdue(error, ids, float(self._times[2]))
