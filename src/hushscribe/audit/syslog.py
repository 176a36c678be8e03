"""A copy of every audit record to a syslog collector: RFC 5424 over TCP (RFC 6587 octet counting),
with TLS when configured.

``send`` never blocks and never fails: it puts the message on a bounded queue (the oldest is
dropped, and counted, when the collector is away too long) and a background thread writes it,
reconnecting with backoff. The log on disk is the record; this copy is for a SIEM to watch.

Each message is ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG`` (RFC 5424 §6):

* facility 13 (log audit), severity 5 (notice) for outcome ``ok``, 4 (warning) for the others;
* TIMESTAMP the record's time; MSGID its event type; no structured data;
* MSG the record as the log's canonical JSON, byte for byte its line in the file. That JSON
  escapes everything but ASCII, so MSG is plain ASCII: ``MSG-ANY`` of RFC 5424 §6.4, sent
  without a BOM (collectors keep a BOM in the text, where it breaks JSON parsers). ``bom=True``
  puts one in front, for a collector that insists on ``MSG-UTF8``.

Nothing connects unless ``[audit.syslog]`` is set: :func:`forwarder` returns None otherwise.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import select
import socket
import ssl
import threading
import time
from datetime import UTC, datetime
from typing import Any, Final

from hushscribe.audit.read import dumps
from hushscribe.settings_audit import SyslogSettings

log = logging.getLogger(__name__)

FACILITY: Final = 13  # log audit (RFC 5424 table 1); 10 would be authpriv
NOTICE: Final = 5
WARNING: Final = 4
BOM: Final = b"\xef\xbb\xbf"
_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z")


def _header_field(value: str, limit: int) -> str:
    """PRINTUSASCII without spaces (RFC 5424 §6.2), at most ``limit`` characters; ``-`` if empty."""
    cleaned = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return cleaned or "-"


def _timestamp(record: dict[str, Any]) -> str:
    value = record.get("time")
    if isinstance(value, str) and _TIME_RE.fullmatch(value):
        return value
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def message(
    record: dict[str, Any], hostname: str, app_name: str, procid: str, *, bom: bool = False
) -> bytes:
    """One RFC 5424 message (without the octet count) for ``record``."""
    severity = NOTICE if record.get("outcome") == "ok" else WARNING
    header = " ".join(
        (
            f"<{FACILITY * 8 + severity}>1",
            _timestamp(record),
            _header_field(hostname, 255),
            _header_field(app_name, 48),
            _header_field(procid, 128),
            _header_field(str(record.get("type") or ""), 32),
            "-",
        )
    )
    return header.encode("ascii") + b" " + (BOM if bom else b"") + dumps(record).encode()


def frame(msg: bytes) -> bytes:
    """RFC 6587 §3.4.1 octet counting: ``MSG-LEN SP SYSLOG-MSG``."""
    return b"%d " % len(msg) + msg


def forwarder(settings: SyslogSettings | None) -> SyslogForwarder | None:
    """A forwarder when syslog is configured; None (and no socket ever) when it is not."""
    return None if settings is None else SyslogForwarder(settings)


class SyslogForwarder:
    def __init__(
        self,
        settings: SyslogSettings,
        *,
        max_queue: int = 10_000,
        bom: bool = False,
        connect_timeout_s: float = 5.0,
        backoff_s: tuple[float, float] = (0.2, 30.0),
    ) -> None:
        self.settings = settings
        self.dropped = 0
        """Messages dropped because the queue was full (the collector away too long)."""
        self.sent = 0
        self._bom = bom
        self._max = max_queue
        self._timeout = connect_timeout_s
        self._backoff = backoff_s
        self._hostname = socket.gethostname()
        self._procid = str(os.getpid())
        self._queue: collections.deque[bytes] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._deadline = float("inf")
        self._wake = threading.Event()
        self._sock: socket.socket | None = None
        self._ssl = self._context() if settings.tls else None
        self._thread = threading.Thread(target=self._run, name="audit-syslog", daemon=True)
        self._thread.start()

    def _context(self) -> ssl.SSLContext:
        ca = self.settings.ca_file
        context = ssl.create_default_context(cafile=str(ca) if ca else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context  # verifies the chain and the host name (check_hostname is on)

    def send(self, record: dict[str, Any]) -> None:
        """Queue a copy of ``record``; returns at once, whatever the collector is doing."""
        framed = frame(
            message(record, self._hostname, self.settings.app_name, self._procid, bom=self._bom)
        )
        with self._cond:
            if self._closing:
                return
            if len(self._queue) >= self._max:
                self._queue.popleft()
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning("syslog collector behind: %d audit messages dropped", self.dropped)
            self._queue.append(framed)
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def close(self, timeout_s: float = 2.0) -> None:
        """Send what is queued for up to ``timeout_s``, then stop; the rest is dropped."""
        with self._cond:
            self._closing = True
            self._deadline = time.monotonic() + timeout_s
            self._cond.notify()
        self._wake.set()
        self._thread.join(timeout_s + 1.0)

    # --- the writer thread ---------------------------------------------------------------------

    def _next(self) -> bytes | None:
        """The next message to write (left on the queue until written), or None to stop."""
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            if not self._queue or time.monotonic() >= self._deadline:
                return None
            return self._queue[0]

    def _run(self) -> None:
        delay = self._backoff[0]
        try:
            while (framed := self._next()) is not None:
                try:
                    sock = self._sock if self._sock is not None and _alive(self._sock) else None
                    if sock is None:
                        self._disconnect()
                        sock = self._sock = self._connect()
                    sock.sendall(framed)
                except (OSError, ValueError) as exc:  # refused, reset, timed out, TLS, a bad name
                    self._disconnect()
                    log.warning("syslog %s:%d: %s; retrying in %.1f s", self.settings.host,
                                self.settings.port, exc, delay)  # fmt: skip
                    if self._wake.wait(delay):  # closing: keep trying until the deadline
                        time.sleep(0.1)
                    delay = min(delay * 2, self._backoff[1])
                    continue
                delay = self._backoff[0]
                with self._cond:
                    if self._queue and self._queue[0] is framed:
                        self._queue.popleft()
                    self.sent += 1
        finally:
            self._disconnect()

    def _connect(self) -> socket.socket:
        address = (self.settings.host, self.settings.port)
        sock = socket.create_connection(address, timeout=self._timeout)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if self._ssl is not None:
                sock = self._ssl.wrap_socket(sock, server_hostname=self.settings.host)
        except BaseException:
            sock.close()
            raise
        return sock

    def _disconnect(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


def _alive(sock: socket.socket) -> bool:
    """Whether the collector still has this connection open. A collector never writes, so a
    readable socket means it closed (or reset) it — found here, before a message is written into
    a connection that is gone and lost with it. (TLS 1.3 session tickets are read and ignored.)"""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    if not readable:
        return True
    previous = sock.gettimeout()
    sock.settimeout(0)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return False
    except (ssl.SSLWantReadError, BlockingIOError):
        return True
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(previous)
