"""Wake-ups between the API and its workers on one machine, so neither has to poll fast.

Each worker has two pipes of its own: ``wake`` (API → worker: "a job was queued") and ``done``
(worker → API: the id of a job that ended). Nothing here is a lock or a semaphore shared between
processes: a worker killed at any instant (``kill -9``, the OOM killer) can leave nothing held
that blocks the API or another worker. Writes never block: they are non-blocking, one message
shorter than ``PIPE_BUF`` (so whole or absent, never torn), and a message that does not fit is
dropped. The database stays the truth: a lost signal only costs the (slow) poll that remains as
a fallback, and workers on other machines keep polling.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.context import SpawnContext

MAX_MESSAGE = 512
"""A job id is 32 characters; anything longer than this is not ours and is ignored."""


def _send(conn: Connection, message: bytes) -> None:
    """Send without ever blocking; a full pipe or a dead reader drops the message."""
    with contextlib.suppress(BlockingIOError, BrokenPipeError, OSError, ValueError):
        conn.send_bytes(message)


def nonblocking(conn: Connection) -> Connection:
    os.set_blocking(conn.fileno(), False)
    return conn


@dataclass
class WorkerLink:
    """The worker's ends (picklable: handed to the worker process when it is spawned)."""

    wake: Connection
    done: Connection

    def wait_for_work(self, timeout_s: float) -> None:
        """Return when a job was queued, or after ``timeout_s``."""
        try:
            if self.wake.poll(timeout_s):
                while self.wake.poll(0):  # several wake-ups mean the same: look at the queue
                    self.wake.recv_bytes(MAX_MESSAGE)
        except (EOFError, OSError):  # the API went away: sleep out the poll, the loop ends us
            wait([], timeout_s)

    def start(self) -> None:
        """In the worker process, before first use: its writes must never block."""
        nonblocking(self.done)

    def job_ended(self, job_id: str) -> None:
        _send(self.done, job_id.encode())


@dataclass
class ApiLink:
    """The API's ends of one worker's pipes."""

    wake: Connection
    done: Connection

    def notify_work(self) -> None:
        _send(self.wake, b"w")

    def close(self) -> None:
        for conn in (self.wake, self.done):
            with contextlib.suppress(OSError):
                conn.close()


def link_pair(ctx: SpawnContext) -> tuple[ApiLink, WorkerLink]:
    """Fresh pipes for one worker process: (the API's ends, the worker's ends)."""
    wake_r, wake_w = ctx.Pipe(duplex=False)
    done_r, done_w = ctx.Pipe(duplex=False)
    return ApiLink(wake=nonblocking(wake_w), done=done_r), WorkerLink(wake=wake_r, done=done_w)


def read_ended(conns: list[Connection], timeout_s: float) -> tuple[list[str], list[Connection]]:
    """Job ids the workers reported within ``timeout_s``, and the connections that closed (their
    worker died: the caller stops watching them)."""
    ids: list[str] = []
    closed: list[Connection] = []
    for conn in wait(conns, timeout_s):
        assert isinstance(conn, Connection)
        try:
            while conn.poll(0):
                message = conn.recv_bytes(MAX_MESSAGE)
                ids.append(message.decode("ascii", "replace"))
        except (EOFError, OSError):
            closed.append(conn)
    return ids, closed
