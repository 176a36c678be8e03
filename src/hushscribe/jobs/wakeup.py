"""Wake-ups between nodes through the database: PostgreSQL's ``LISTEN``/``NOTIFY``.

On one machine the API and its workers wake each other through pipes (``signals.py``). Nodes
that share only a PostgreSQL database (``serve --role api`` here, ``--role worker`` there) use two
channels instead:

- ``hushscribe_jobs``: a job was queued; a node with workers wakes them (payload: the sender).
- ``hushscribe_job_ended``: a job ended; an API node wakes the requests waiting for it (payload:
  the sender and the job id).

Each process holds at most one listening connection of its own (``Listener``, outside the pool),
and sends from a thread (``Publisher``), so a caller on the event loop never waits for the
database. A sender ignores what it sent itself: its own workers heard it through their pipes.

The database stays the truth. A notification can be lost (a sender that crashed between its
commit and its ``NOTIFY``, a listener reconnecting), and that costs only the poll that remains:
idle workers look at the queue every ``jobs.poll_interval_s``, waiting requests at their job every
quarter second, and a listener that (re)connects wakes everyone once, for what it may have missed.
On SQLite (or a PostgreSQL driver other than psycopg 3) everything here does nothing.
"""

from __future__ import annotations

import collections
import logging
import secrets
import threading
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from typing import Any, Final

from sqlalchemy import Engine, text

from hushscribe.jobs.signals import read_ended

log = logging.getLogger("hushscribe.wakeup")

CHANNEL_WORK: Final = "hushscribe_jobs"
CHANNEL_ENDED: Final = "hushscribe_job_ended"
LISTEN_SLICE_S: Final = 0.5
"""The listening thread looks at its stop flag this often (a stop waits at most this long)."""
BACKOFF_START_S: Final = 1.0
BACKOFF_MAX_S: Final = 30.0
"""A listener that lost its connection tries again after 1 s, doubling up to 30 s; the poll
covers the gap."""
CONNECT_TIMEOUT_S: Final = 10
KEEPALIVE: Final = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}
"""TCP keepalives on the listening connection: it only reads, so without them a peer that
vanished (a node or a network path gone, no FIN) would leave it waiting forever; with them it
fails within about a minute and reconnects."""
MAX_PENDING: Final = 10_000
"""Notifications waiting to be sent while the database does not answer; more are dropped (the
poll covers them) rather than held in memory without bound."""


def supports_notify(engine: Engine) -> bool:
    """LISTEN/NOTIFY is used on PostgreSQL through psycopg 3 (``postgresql+psycopg://``)."""
    return engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"


class Listener:
    """A thread with a connection of its own that LISTENs on ``handlers``' channels and calls
    each handler with a notification's payload. ``on_connect`` runs after every (re)connection:
    what was sent while nobody listened is lost, so the caller looks once."""

    def __init__(
        self,
        engine: Engine,
        handlers: Mapping[str, Callable[[str], None]],
        on_connect: Callable[[], None],
    ) -> None:
        self.engine = engine
        self.handlers = dict(handlers)
        self.on_connect = on_connect
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _connect(self) -> Any:
        import psycopg
        from psycopg import sql

        args, kwargs = self.engine.dialect.create_connect_args(self.engine.url)
        kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
        for key, value in KEEPALIVE.items():
            kwargs.setdefault(key, value)
        conn = psycopg.connect(*args, **{**kwargs, "autocommit": True})
        try:
            for channel in self.handlers:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        except BaseException:
            conn.close()
            raise
        return conn

    def _run(self) -> None:
        backoff = BACKOFF_START_S
        while not self._stop.is_set():
            try:
                conn = self._connect()
            except Exception as exc:
                log.warning("cannot LISTEN for wake-ups (%s); polling, retrying in %.0f s",
                            type(exc).__name__, backoff)  # fmt: skip
                self._stop.wait(backoff)
                backoff = min(BACKOFF_MAX_S, backoff * 2)
                continue
            backoff = BACKOFF_START_S
            try:
                self.connected.set()
                self._call(self.on_connect)
                while not self._stop.is_set():
                    for note in conn.notifies(timeout=LISTEN_SLICE_S):
                        handler = self.handlers.get(note.channel)
                        if handler is not None:
                            self._call(handler, note.payload)
            except Exception as exc:
                if not self._stop.is_set():
                    log.warning("lost the LISTEN connection (%s); polling until it is back",
                                type(exc).__name__)  # fmt: skip
            finally:
                self.connected.clear()
                conn.close()

    @staticmethod
    def _call(handler: Callable[..., None], *args: str) -> None:
        try:
            handler(*args)
        except Exception:  # a handler's bug must not end the listening
            log.exception("wake-up handler failed")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="wakeup-listen", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2 * LISTEN_SLICE_S) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)


class Publisher:
    """Sends notifications from a thread of its own, several in one transaction; ``send``
    never waits for the database. Identical pending notifications are sent once."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pending: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def send(self, channel: str, payload: str) -> None:
        with self._cond:
            if len(self._pending) < MAX_PENDING:
                self._pending[(channel, payload)] = None
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._stopping)
                if not self._pending:
                    return  # stopping, nothing left to say
                batch = list(self._pending)
                self._pending.clear()
            try:
                with self.engine.begin() as conn:
                    for channel, payload in batch:
                        conn.execute(
                            text("SELECT pg_notify(:channel, :payload)"),
                            {"channel": channel, "payload": payload},
                        )
            except Exception as exc:  # the database is away: the poll covers what is lost
                log.warning("could not send %d wake-ups (%s)", len(batch), type(exc).__name__)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="wakeup-send", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Send what is pending (for at most ``timeout_s``), then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)


class Wakeups:
    """One process's part in the wake-ups between nodes: what it tells the others
    (:meth:`work_queued`, :meth:`job_ended`) and what it hears (:meth:`listen`)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.enabled = supports_notify(engine)
        self.origin = secrets.token_hex(6)
        """Names this process in what it sends, so it can ignore its own notifications."""
        self._publisher = Publisher(engine) if self.enabled else None
        self._handlers: dict[str, Callable[[str], None]] = {}
        self._missed: list[Callable[[], None]] = []
        self.listener: Listener | None = None

    def listen(
        self,
        work: Callable[[], None] | None = None,
        ended: Callable[[str], None] | None = None,
        missed: Callable[[], None] | None = None,
    ) -> None:
        """Before :meth:`start`: call ``work()`` when another node queued a job, ``ended(id)``
        when another node's worker ended job ``id``, and ``missed()`` (and ``work()``) whenever
        the listening connection (re)opens."""
        if work is not None:
            self._handlers[CHANNEL_WORK] = lambda payload: self._heard(payload, work)
            self._missed.append(work)
        if ended is not None:
            self._handlers[CHANNEL_ENDED] = lambda payload: self._heard_ended(payload, ended)
        if missed is not None:
            self._missed.append(missed)

    def _heard(self, payload: str, work: Callable[[], None]) -> None:
        if payload != self.origin:
            work()

    def _heard_ended(self, payload: str, ended: Callable[[str], None]) -> None:
        origin, _, job_id = payload.partition(" ")
        if origin != self.origin and job_id:
            ended(job_id)

    def _reconnected(self) -> None:
        for missed in self._missed:
            missed()

    def start(self) -> None:
        if self._publisher is None:
            return
        self._publisher.start()
        if self._handlers:
            self.listener = Listener(self.engine, self._handlers, self._reconnected)
            self.listener.start()

    def work_queued(self) -> None:
        """A job was queued here: wake the workers of other nodes (never blocks)."""
        if self._publisher is not None:
            self._publisher.send(CHANNEL_WORK, self.origin)

    def job_ended(self, job_id: str) -> None:
        """A worker here ended ``job_id``: wake the requests other nodes hold for it."""
        if self._publisher is not None:
            self._publisher.send(CHANNEL_ENDED, f"{self.origin} {job_id}")

    def stop(self) -> None:
        if self.listener is not None:
            self.listener.stop()
        if self._publisher is not None:
            self._publisher.stop()


def relay_ended(
    sources: Callable[[], list[Connection]], ended: Callable[[str], None], stop: threading.Event
) -> threading.Thread:
    """Read job ids from the local workers' "done" pipes in a thread and hand each to
    ``ended`` until ``stop`` is set. ``sources`` gives the current pipes (a restarted worker has
    new ones)."""

    def run() -> None:
        closed: set[int] = set()
        while not stop.is_set():
            conns = [c for c in sources() if id(c) not in closed and not c.closed]
            ids, dead = read_ended(conns, 0.5)
            closed.update(id(c) for c in dead)  # a dead worker's pipe: its successor has new
            for job_id in ids:
                ended(job_id)

    thread = threading.Thread(target=run, name="job-ended-relay", daemon=True)
    thread.start()
    return thread
