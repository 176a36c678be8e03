"""Start, watch and restart worker processes; enforce their deadlines; stop them quickly.

Each worker gets pipes of its own (``signals.py``) and a watchdog (``watchdog.py``), both new at
every start, so nothing of a dead worker's is ever shared with its successor.
"""

from __future__ import annotations

import logging
import multiprocessing
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import ctranslate2

from hushscribe.jobs.queue import JobQueue, make_engine
from hushscribe.jobs.signals import ApiLink, link_pair
from hushscribe.jobs.watchdog import Watchdog
from hushscribe.jobs.worker import worker_main
from hushscribe.settings import Settings

log = logging.getLogger("hushscribe.supervisor")

BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 60.0
"""A worker that keeps crashing is restarted ever more slowly, at most once a minute."""
STOP_GRACE_S = 2.0
"""How long a stopping worker may take to put its jobs back before it is killed (and its jobs put
back for it). The work of a running job is lost either way: it starts again from the beginning,
so there is no point in waiting for the native call in progress to end."""


CPU_WORKERS = 2
"""On CPU two workers, each allowed every core: one alone runs at full speed (0.97x plain
faster-whisper on a 60 s file), two together keep the cores busy while the other uploads, decodes
or writes (8 clients: 1.47x plain sequential vs 1.22x with one worker; docs/BENCHMARKS.md)."""


def worker_count(settings: Settings) -> int:
    if settings.jobs.workers:
        return settings.jobs.workers
    gpus = ctranslate2.get_cuda_device_count() if settings.engine.device != "cpu" else 0
    return gpus if gpus else CPU_WORKERS


@dataclass
class _Slot:
    index: int
    process: BaseProcess | None = None
    worker_id: str = ""
    restarts: int = 0
    backoff_s: float = BACKOFF_START_S
    next_start: float = 0.0
    started: float = field(default=0.0)
    link: ApiLink | None = None
    watchdog: Watchdog | None = None


class Supervisor:
    """Keeps ``worker_count`` worker processes running."""

    def __init__(
        self,
        settings: Settings,
        on_restart: Callable[[], None] | None = None,
        on_job_ended: Callable[[str], None] | None = None,
        queue: JobQueue | None = None,
    ) -> None:
        self.settings = settings
        self.on_restart = on_restart
        self.on_job_ended = on_job_ended
        self.slots = [_Slot(i) for i in range(worker_count(settings))]
        self._ctx = multiprocessing.get_context("spawn")  # no forked copies of threads or sockets
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._queue = queue
        """The API's own queue: one engine per process (a second one would open the SQLite file
        again, which POSIX locking does not forgive)."""

    def _worker_settings(self) -> Settings:
        threads = self.settings.jobs.worker_threads or self.settings.engine.cpu_threads
        engine = self.settings.engine.model_copy(
            update={"cpu_threads": threads or multiprocessing.cpu_count() or 1}
        )
        return self.settings.model_copy(update={"engine": engine})

    def _gpu(self, slot: _Slot) -> int | None:
        """The GPU a worker gets to itself (``CUDA_VISIBLE_DEVICES``): one worker per GPU, or
        several sharing them in turn; None on CPU."""
        if self.settings.engine.device == "cpu":
            return None
        gpus = ctranslate2.get_cuda_device_count()
        return slot.index % gpus if gpus else None

    @property
    def queue(self) -> JobQueue:
        if self._queue is None:
            self._queue = JobQueue(
                make_engine(self.settings.db_url, upgrade=self.settings.database_auto_upgrade)
            )
        return self._queue

    def _start(self, slot: _Slot) -> None:
        slot.worker_id = f"w{slot.index}-{secrets.token_hex(4)}"
        api_end, worker_end = link_pair(self._ctx)
        watchdog = Watchdog(self._ctx)
        proc = self._ctx.Process(
            target=worker_main,
            args=(self._worker_settings(), slot.worker_id, worker_end, watchdog, self._gpu(slot)),
            name=f"hushscribe-worker-{slot.index}",
            daemon=False,
        )
        proc.start()
        worker_end.wake.close()  # the worker has its copies; ours would hide its death
        worker_end.done.close()
        if slot.link is not None:
            slot.link.close()
        slot.process, slot.started = proc, time.monotonic()
        slot.link, slot.watchdog = api_end, watchdog
        log.info("worker %s started (pid %s)", slot.worker_id, proc.pid)

    def notify_work(self) -> None:
        """A job was queued: wake the idle workers (never blocks)."""
        for slot in self.slots:
            if slot.link is not None:
                slot.link.notify_work()

    def done_connections(self) -> list[Connection]:
        """Where the running workers report the jobs that ended."""
        return [s.link.done for s in self.slots if s.link is not None]

    def start(self) -> None:
        for slot in self.slots:
            self._start(slot)
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._thread.start()

    def _enforce(self, slot: _Slot) -> None:
        """Kill a worker stuck past its stage's deadline; fail the jobs it blamed (no retry:
        the cause is their input), put its other jobs back, and let the restart follow."""
        proc, watchdog = slot.process, slot.watchdog
        if proc is None or watchdog is None or not proc.is_alive():
            return
        overdue = watchdog.overdue()
        if overdue is None:
            return
        jobs = ", ".join(overdue.job_ids)
        log.error("worker %s (pid %s) exceeded %.0f s on jobs %s; killing it",
                  slot.worker_id, proc.pid, overdue.limit_s, jobs)  # fmt: skip
        proc.kill()
        proc.join(timeout=10)
        watchdog.disarm()
        what = "decoding" if overdue.error.code == "decode_timeout" else "transcription"
        message = (
            f"{what} made no progress for {overdue.limit_s:.0f} s and was stopped; the file "
            "may be damaged or crafted. It is not retried."
        )
        try:
            code, ttl = overdue.error.code, self.settings.jobs.result_ttl_s
            for job_id in overdue.job_ids:
                if not self.queue.fail(job_id, slot.worker_id, code, message, False, ttl):
                    self.queue.fail_queued(job_id, code, message)  # looked at, not yet claimed
            self.queue.requeue_worker(slot.worker_id)
        except Exception:  # the database is down: the leases run out and the claims clean up
            log.exception("could not record the outcome of worker %s's jobs", slot.worker_id)
        for job_id in overdue.job_ids:
            if self.on_job_ended is not None:
                self.on_job_ended(job_id)

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            for slot in self.slots:
                if not self._stop.is_set():
                    self._enforce(slot)
                proc = slot.process
                if proc is None or proc.is_alive() or self._stop.is_set():
                    continue
                now = time.monotonic()
                if slot.next_start == 0.0:
                    log.warning(
                        "worker %s exited with %s; restarting in %.0f s",
                        slot.worker_id, proc.exitcode, slot.backoff_s,
                    )  # fmt: skip
                    if now - slot.started > 10 * BACKOFF_MAX_S:
                        slot.backoff_s = BACKOFF_START_S  # it ran well for a while: forgive
                    slot.next_start = now + slot.backoff_s
                    slot.backoff_s = min(BACKOFF_MAX_S, slot.backoff_s * 2)
                elif now >= slot.next_start:
                    slot.next_start = 0.0
                    slot.restarts += 1
                    if self.on_restart:
                        self.on_restart()
                    self._start(slot)

    def watching(self) -> bool:
        """The thread that restarts workers and enforces their deadlines runs."""
        return self._thread is not None and self._thread.is_alive()

    def worker_ids(self) -> set[str]:
        """The ids the current worker processes register under."""
        return {s.worker_id for s in self.slots if s.worker_id}

    def pids(self) -> list[int]:
        return [s.process.pid for s in self.slots if s.process and s.process.pid is not None]

    def alive(self) -> int:
        return sum(1 for s in self.slots if s.process is not None and s.process.is_alive())

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM every worker (each puts its jobs back in the queue and exits); kill what
        remains after ``grace_s`` and put its jobs back for it."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        slots = [s for s in self.slots if s.process is not None]
        for slot in slots:
            assert slot.process is not None
            if slot.process.is_alive():
                slot.process.terminate()
        deadline = time.monotonic() + grace_s
        for slot in slots:
            proc = slot.process
            assert proc is not None
            proc.join(timeout=max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                log.info("worker %s is inside a native call; killing it", slot.worker_id)
                proc.kill()
                proc.join(timeout=5)
                try:
                    self.queue.requeue_worker(slot.worker_id)
                except Exception:  # its leases run out instead
                    log.exception("could not put worker %s's jobs back", slot.worker_id)
            if slot.link is not None:
                slot.link.close()
