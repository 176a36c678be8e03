"""HTTP connections below the ASGI app: uvicorn's h11 protocol with the limits it lacks.

* **Head timeout.** A request's line and headers (its head) must arrive within
  ``server.header_timeout_s``. uvicorn has no such timeout (its keep-alive timer stops at the
  first byte), so clients sending a header line now and then held connections, descriptors and
  memory for ever: 1,100 of them made real requests 20x slower. A late head is answered 408 (if
  part of it came) and its connection closed.
* **Connection cap.** At most ``server.max_connections`` connections are open, fewer if the
  open-file limit asks (:func:`connection_limit`); one more is closed as soon as it is accepted,
  so the database and uploads always find a descriptor, instead of "Too many open files".
* **Heads in the JSON error shape.** Larger than :data:`MAX_HEAD_BYTES`: 431; malformed: 400
  (uvicorn answers these in plain text, and h11 limits only heads that arrive in pieces).
* **Floods are logged as counts**, the first event at once and then one line per interval, never
  a line or a traceback per connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import resource
from http import HTTPStatus
from typing import Any, ClassVar, Final

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from hushscribe.errors import HeadersTooLarge, HushscribeError, InvalidRequest, RequestTimeout

log = logging.getLogger("hushscribe.api")

MAX_HEAD_BYTES: Final = 16 * 1024
"""Largest request head. A bearer key, cookies and a proxy's forwarding headers take well under
4 KiB; 16 KiB is h11's own default for heads that arrive in pieces."""
LOG_INTERVAL_S: Final = 60.0
"""A flood is reported once at its first event, then as one count per this many seconds."""
FD_RESERVE: Final = 256
"""Descriptors kept for everything but client connections: database connections (each with its
-wal and -shm), pipes to the workers, logs, the listening socket."""
FDS_PER_CONNECTION: Final = 2
"""A connection's socket and, while it uploads, its blob file."""
_HEAD_END = re.compile(rb"\n\r?\n")  # where h11 sees a head end


class FloodLog:
    """Reports one kind of event: the first at once, then one count per ``interval_s`` while
    they go on (a line per event would be the flood's own denial of service on the log)."""

    def __init__(self, first: str, summary: str, interval_s: float = LOG_INTERVAL_S) -> None:
        self.first, self.summary, self.interval_s = first, summary, interval_s
        self.count = 0
        self._window: asyncio.TimerHandle | None = None

    def note(self) -> None:
        if self._window is None:
            log.warning(self.first)
            self._window = asyncio.get_running_loop().call_later(self.interval_s, self._flush)
        else:
            self.count += 1

    def _flush(self) -> None:
        self._window = None
        if self.count:
            log.warning(self.summary, self.count, self.interval_s)
            self.count = 0
            self._window = asyncio.get_running_loop().call_later(self.interval_s, self._flush)


class ConnectionLimits:
    """The limits of one server, shared by all its connections."""

    def __init__(self, header_timeout_s: float, max_connections: int) -> None:
        self.header_timeout_s = header_timeout_s
        self.max_connections = max_connections
        self.slow = FloodLog(
            f"closed a connection whose request head was not complete within "
            f"{header_timeout_s:g} s (server.header_timeout_s); more are counted",
            f"closed %d more connections whose request head was not complete within "
            f"{header_timeout_s:g} s in the last %g s",
        )
        self.refused = FloodLog(
            f"closed a new connection at once: {max_connections} are open, the connection "
            "limit (server.max_connections); more are counted",
            "closed %d more new connections at the connection limit in the last %g s",
        )
        self.bad = FloodLog(
            "refused a malformed or oversized request head; more are counted",
            "refused %d more malformed or oversized request heads in the last %g s",
        )


class _Connection(h11.Connection):
    """h11's connection, remembering the protocol error it raised: uvicorn's 400 answer is not
    told whether the head was malformed or too large."""

    last_error: h11.RemoteProtocolError | None = None

    def next_event(self) -> Any:
        try:
            return super().next_event()
        except h11.RemoteProtocolError as exc:
            self.last_error = exc
            raise


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with :class:`ConnectionLimits` (see the module's text)."""

    limits: ClassVar[ConnectionLimits]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.conn: _Connection = _Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self.transport = transport  # for connection_lost
            transport.close()
            self.limits.refused.note()
            return
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        if self.conn.their_state is h11.IDLE and self._head_too_large():
            self._refuse(HeadersTooLarge(f"the request head is larger than {MAX_HEAD_BYTES} bytes"))
            return
        super().handle_events()
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            self._cancel_head_timer()  # the head is in (or the connection is done)
        elif self._head_timer is None and self.conn.trailing_data[0]:
            self._arm_head_timer()  # the next request on a kept-alive connection has begun

    def send_400_response(self, msg: str) -> None:
        error = self.conn.last_error
        if error is not None and error.error_status_hint == 431:
            self._refuse(HeadersTooLarge(f"the request head is larger than {MAX_HEAD_BYTES} bytes"))
        else:
            self._refuse(InvalidRequest("the request is not valid HTTP/1.1"))

    def _head_too_large(self) -> bool:
        pending = self.conn.trailing_data[0]
        return (
            len(pending) > MAX_HEAD_BYTES
            and _HEAD_END.search(pending, 0, MAX_HEAD_BYTES + 3) is None
        )

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_late)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        self.limits.slow.note()
        if self.conn.trailing_data[0]:
            timeout = self.limits.header_timeout_s
            self._answer(RequestTimeout(f"the request head did not arrive within {timeout:g} s"))
        else:
            self.transport.close()  # nothing was sent: nobody to answer

    def _refuse(self, error: HushscribeError) -> None:
        self.limits.bad.note()
        self._answer(error)

    def _answer(self, error: HushscribeError) -> None:
        """Send ``error`` in the JSON shape and close. Written by hand: h11 answers only a
        request whose head it has read."""
        body = json.dumps(error.body(), separators=(",", ":")).encode()
        head = (
            f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        )
        if not self.transport.is_closing():
            self.transport.write(head.encode("latin-1") + body)
            self.transport.close()


def protocol_class(header_timeout_s: float, max_connections: int) -> type[GuardedH11Protocol]:
    """The protocol class to hand uvicorn (``http=``) for one server with these limits."""

    class Protocol(GuardedH11Protocol):
        limits = ConnectionLimits(header_timeout_s, max_connections)

    return Protocol


def connection_limit(max_connections: int) -> int:
    """``max_connections``, or fewer if the open-file limit cannot hold that many connections
    beside everything else (the soft limit is first raised towards the hard one if needed)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FD_RESERVE + FDS_PER_CONNECTION * max_connections
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return max_connections
    room = max(1, (soft - FD_RESERVE) // FDS_PER_CONNECTION)
    if room < max_connections:
        log.warning(
            "server.max_connections is %d, but the open-file limit (%d) leaves room for %d "
            "connections; serving at most %d (raise LimitNOFILE to serve more)",
            max_connections, soft, room, room,
        )  # fmt: skip
    return min(max_connections, room)
