"""Start, watch and restart worker processes; stop them cleanly."""

from __future__ import annotations

import logging
import multiprocessing
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess

import ctranslate2

from hushscribe.jobs.signals import Signals
from hushscribe.jobs.worker import worker_main
from hushscribe.settings import Settings

log = logging.getLogger("hushscribe.supervisor")

BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 60.0
"""A worker that keeps crashing is restarted ever more slowly, at most once a minute."""
STOP_GRACE_S = 30.0
"""How long a stopping worker may take to finish its current job before it is killed."""


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


class Supervisor:
    """Keeps ``worker_count`` worker processes running."""

    def __init__(
        self,
        settings: Settings,
        on_restart: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.on_restart = on_restart
        self.slots = [_Slot(i) for i in range(worker_count(settings))]
        self._ctx = multiprocessing.get_context("spawn")  # no forked copies of threads or sockets
        self.signals = Signals.create(self._ctx)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _worker_settings(self) -> Settings:
        threads = self.settings.jobs.worker_threads or self.settings.engine.cpu_threads
        engine = self.settings.engine.model_copy(
            update={"cpu_threads": threads or multiprocessing.cpu_count() or 1}
        )
        return self.settings.model_copy(update={"engine": engine})

    def _start(self, slot: _Slot) -> None:
        slot.worker_id = f"w{slot.index}-{secrets.token_hex(4)}"
        proc = self._ctx.Process(
            target=worker_main,
            args=(self._worker_settings(), slot.worker_id, self.signals),
            name=f"hushscribe-worker-{slot.index}",
            daemon=False,
        )
        proc.start()
        slot.process, slot.started = proc, time.monotonic()
        log.info("worker %s started (pid %s)", slot.worker_id, proc.pid)

    def start(self) -> None:
        for slot in self.slots:
            self._start(slot)
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            for slot in self.slots:
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

    def pids(self) -> list[int]:
        return [s.process.pid for s in self.slots if s.process and s.process.pid is not None]

    def alive(self) -> int:
        return sum(1 for s in self.slots if s.process is not None and s.process.is_alive())

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM every worker (each requeues or finishes its job), then kill what remains."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        procs = [s.process for s in self.slots if s.process is not None]
        for p in procs:
            if p.is_alive():
                p.terminate()
        deadline = time.monotonic() + grace_s
        for p in procs:
            p.join(timeout=max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                log.warning("worker pid %s did not stop in time; killing it", p.pid)
                p.kill()
                p.join(timeout=5)
