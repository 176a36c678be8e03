"""The jobs a worker holds, each with a live lease for exactly as long as it is held.

A job enters when it is claimed and leaves when the worker is done with it (stored, failed, or
dropped), whatever else the worker is busy with meanwhile: in a batch, the jobs still waiting
for their turn keep their leases too, so no other worker re-claims them. One thread renews every
held lease (``lease_s / 3``), writes progress as it advances (at most once a second per job),
and looks once a second whether a held job was cancelled or taken away, so a cancelled job
stops within about a second, not at its next renewal.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import select

from hushscribe.jobs.leases import LeasedQueue
from hushscribe.jobs.tables import RUNNING, jobs

log = logging.getLogger("hushscribe.worker")

CHECK_S = 1.0
"""How often cancellations are looked for and progress is written."""
PROGRESS_STEP = 0.01
"""Progress is written when it moved by at least this much."""


@dataclass
class Held:
    """One held job: what the worker reports about it, and whether it must stop."""

    job_id: str
    progress: float = 0.0
    audio_seconds: float | None = None
    lost: threading.Event = field(default_factory=threading.Event)
    written_progress: float = 0.0
    renewed: float = field(default_factory=time.monotonic)


class Holdings(threading.Thread):
    def __init__(self, queue: LeasedQueue, worker_id: str, lease_s: float) -> None:
        super().__init__(name="leases", daemon=True)
        self.queue, self.worker_id, self.lease_s = queue, worker_id, lease_s
        self._held: dict[str, Held] = {}
        self._lock = threading.Lock()
        self._stop_event = threading.Event()

    def hold(self, job_id: str) -> Held:
        """Hold a job just claimed (its lease is fresh from the claim); the same job again is the
        same holding."""
        with self._lock:
            return self._held.setdefault(job_id, Held(job_id))

    def lost(self, job_id: str) -> bool:
        """Whether the job was cancelled or taken away while held."""
        with self._lock:
            held = self._held.get(job_id)
        return held is None or held.lost.is_set()

    def release(self, job_id: str) -> None:
        """The worker is done with the job: its lease is no longer renewed."""
        with self._lock:
            self._held.pop(job_id, None)

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._held)

    def run(self) -> None:
        while not self._stop_event.wait(min(CHECK_S, self.lease_s / 3)):
            try:
                self.tick()
            except Exception:  # a database hiccup: try again at the next tick
                log.exception("lease renewal failed")

    def tick(self) -> None:
        with self._lock:
            held = list(self._held.values())
        if not held:
            return
        now = time.monotonic()
        ids = [h.job_id for h in held]
        with self.queue.engine.connect() as conn:
            rows = conn.execute(
                select(jobs.c.id).where(
                    jobs.c.id.in_(ids), jobs.c.status == RUNNING,
                    jobs.c.lease_owner == self.worker_id,
                )
            ).scalars()  # fmt: skip
            still = set(rows)
        for h in held:
            if h.job_id not in still:
                h.lost.set()  # cancelled, deleted, or taken by another worker: stop it
                continue
            due = now - h.renewed >= self.lease_s / 3
            moved = abs(h.progress - h.written_progress) >= PROGRESS_STEP
            if due or moved:
                progress = h.progress
                if not self.queue.heartbeat(
                    h.job_id, self.worker_id, self.lease_s, progress, h.audio_seconds
                ):
                    h.lost.set()
                h.renewed, h.written_progress = now, progress

    def stop(self) -> None:
        self._stop_event.set()
