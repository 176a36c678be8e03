"""Requests waiting for their job, woken by the workers' "job ended" signals."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection

from hushscribe.jobs.signals import read_ended


class Waiters:
    def __init__(self) -> None:
        self._events: dict[str, set[asyncio.Event]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()

    @contextmanager
    def watch(self, job_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever a worker says ``job_id`` ended (check the database then)."""
        self._loop = asyncio.get_running_loop()
        event = asyncio.Event()
        self._events.setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            events = self._events.get(job_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._events[job_id]

    def _wake(self, job_id: str) -> None:
        for event in list(self._events.get(job_id, ())):
            event.set()

    def ended(self, job_id: str) -> None:
        """From any thread: the job ended, wake its waiters."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake, job_id)

    def relay(self, sources: Callable[[], list[Connection]]) -> threading.Thread:
        """Read job ids from the workers' pipes in a thread and wake their waiters. ``sources``
        gives the current pipes (a restarted worker has new ones)."""

        def run() -> None:
            closed: set[int] = set()
            while not self._stop.is_set():
                conns = [c for c in sources() if id(c) not in closed and not c.closed]
                ids, dead = read_ended(conns, 0.5)
                closed.update(id(c) for c in dead)  # a dead worker's pipe: its successor has new
                for job_id in ids:
                    self.ended(job_id)

        thread = threading.Thread(target=run, name="job-ended-relay", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
