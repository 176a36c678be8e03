"""Requests waiting for their job, woken when it ends: by the workers of this machine (their
pipes, relayed by ``jobs/wakeup.relay_ended``) or of other nodes (PostgreSQL ``NOTIFY``,
``jobs/wakeup.py``). A woken request reads its job from the database; without a wake-up it looks
anyway every quarter second (``routes_audio.FALLBACK_POLL_S``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Waiters:
    def __init__(self) -> None:
        self._events: dict[str, set[asyncio.Event]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

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

    def _wake_all(self) -> None:
        for events in list(self._events.values()):
            for event in list(events):
                event.set()

    def _call(self, callback: Callable[..., object], *args: str) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(callback, *args)

    def ended(self, job_id: str) -> None:
        """From any thread: the job ended, wake its waiters."""
        self._call(self._wake, job_id)

    def wake_all(self) -> None:
        """From any thread: any job may have ended (wake-ups were missed); every waiter looks."""
        self._call(self._wake_all)
