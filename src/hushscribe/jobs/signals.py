"""Wake-ups between the API and its workers on one machine, so neither has to poll fast.

``work`` is set by the API when it queues a job: idle workers wake at once instead of at their next
poll. ``done`` carries the ids of jobs that ended, so a request waiting on one answers at once. The
database stays the truth: a lost signal only costs the (slow) poll that remains as a fallback, and
workers on other machines keep polling.
"""

from __future__ import annotations

import contextlib
import queue as stdlib_queue
from dataclasses import dataclass
from multiprocessing.context import SpawnContext
from typing import Any


@dataclass
class Signals:
    work: Any  # multiprocessing Event
    done: Any  # multiprocessing Queue of job ids

    @classmethod
    def create(cls, ctx: SpawnContext) -> Signals:
        return cls(work=ctx.Event(), done=ctx.Queue(maxsize=10_000))

    def job_ended(self, job_id: str) -> None:
        with contextlib.suppress(stdlib_queue.Full):
            self.done.put_nowait(job_id)

    def wait_for_work(self, timeout_s: float) -> None:
        if self.work.wait(timeout_s):
            self.work.clear()
