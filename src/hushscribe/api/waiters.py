"""Requests waiting for their job, woken by the workers' "job ended" signals."""

from __future__ import annotations

import asyncio
import queue as stdlib_queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


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

    def relay(self, done: Any) -> threading.Thread:
        """Read job ids from the workers' queue in a thread and wake their waiters."""

        def run() -> None:
            while not self._stop.is_set():
                try:
                    job_id = done.get(timeout=0.5)
                except stdlib_queue.Empty:
                    continue
                except (EOFError, OSError, ValueError):  # the queue was closed at shutdown
                    return
                loop = self._loop
                if loop is not None and not loop.is_closed():
                    loop.call_soon_threadsafe(self._wake, job_id)

        thread = threading.Thread(target=run, name="job-ended-relay", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
