"""systemd's service notification protocol (``sd_notify(3)``), with the standard library only.

Under ``Type=notify`` systemd passes the address of a datagram socket in ``NOTIFY_SOCKET``
(a path, or ``@name`` for Linux's abstract namespace) and, with ``WatchdogSec=``, the watchdog
period in ``WATCHDOG_USEC``. The service sends newline-separated ``KEY=VALUE`` lines to it:
``READY=1`` once it serves, ``STATUS=…`` for ``systemctl status``, ``WATCHDOG=1`` to prove it is
alive, ``STOPPING=1`` when it begins to stop. Outside systemd nothing is set and every call here
does nothing, so the same code runs from a terminal, a container or a test.
:class:`NotifyingServer` is uvicorn's server speaking this protocol.

These variables belong to systemd's protocol with the process, not to hushscribe's
configuration: they are read here and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

import uvicorn

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 2.0
"""A send waits at most this long for room in systemd's queue; a notification is never worth
blocking the server for."""


def _address(value: str) -> str | None:
    """The socket address ``NOTIFY_SOCKET`` names, as ``socket`` takes it; None if unusable."""
    if value.startswith("@"):  # abstract namespace: a leading NUL byte instead of '@'
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    # systemd also knows vsock:CID:PORT (virtual machines); AF_VSOCK is not among the address
    # families the unit allows, and nothing here runs in a VM that is notified that way.
    log.warning("NOTIFY_SOCKET=%r is not a path or an abstract socket; not notifying", value)
    return None


class Notifier:
    """Sends notifications to the socket systemd gave this process; without one, does nothing."""

    def __init__(self, address: str | None) -> None:
        self.address = _address(address) if address else None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET") or None)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send ``fields`` (``"READY=1"``, ``"STATUS=…"``) as one datagram; True when sent.
        Never raises: a service must not fail because its supervisor cannot be told."""
        if self.address is None:
            return False
        message = "\n".join(field.replace("\n", " ") for field in fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.settimeout(SEND_TIMEOUT_S)
                sock.sendto(message, self.address)
        except OSError as exc:
            log.warning("cannot notify systemd at %r: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def stopping(self, status: str) -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between two ``WATCHDOG=1``: half of ``WATCHDOG_USEC``, as ``sd_watchdog_enabled``
    advises. None when the watchdog is off, or is meant for another process
    (``WATCHDOG_PID``)."""
    env = os.environ if environ is None else environ
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2 / 1_000_000 if usec > 0 else None


async def keep_alive(
    notifier: Notifier,
    interval_s: float,
    healthy: Callable[[], bool],
    status: Callable[[], str],
) -> None:
    """Send ``WATCHDOG=1`` every ``interval_s`` while ``healthy()``; say so in ``STATUS`` when it
    stops or starts again being healthy (``status()`` is the healthy line).

    Run it as a task on the server's own event loop: a loop that stops turning stops the pings,
    and systemd restarts the service once ``WatchdogSec`` passes without one.
    """
    was_healthy = True
    while True:
        try:
            now_healthy = healthy()
        except Exception:  # a health check that fails is no proof of health
            log.exception("health check for the systemd watchdog failed")
            now_healthy = False
        if now_healthy:
            if not was_healthy:
                notifier.status(status())
            notifier.watchdog()
        elif was_healthy:
            notifier.status("no live worker process: watchdog pings held back")
        was_healthy = now_healthy
        await asyncio.sleep(interval_s)


class NotifyingServer(uvicorn.Server):
    """uvicorn's server, telling systemd when it listens (``READY=1``, not before: clients that
    systemd starts after this unit must find the port open), that it lives (``WATCHDOG=1`` from a
    task on its event loop while ``healthy()``), and when it begins to stop (``STOPPING=1``)."""

    def __init__(
        self, config: uvicorn.Config, notifier: Notifier, healthy: Callable[[], bool]
    ) -> None:
        super().__init__(config)
        self.notifier = notifier
        self.healthy = healthy
        self._watchdog: asyncio.Task[None] | None = None

    def serving(self) -> str:
        scheme = "https" if self.config.is_ssl else "http"
        return f"serving on {scheme}://{self.config.host}:{self.config.port}"

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # The app's lifespan (database, audit log, worker processes) runs first, then the
        # listening sockets open; a failure in either exits from inside, never reaching below.
        await super().startup(sockets=sockets)
        if not self.started:
            return
        self.notifier.ready(self.serving())
        interval = watchdog_interval()
        if interval is not None and self.notifier.enabled:
            self._watchdog = asyncio.create_task(
                keep_alive(self.notifier, interval, self.healthy, self.serving)
            )

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # systemd no longer expects watchdog pings once told the service is stopping; the
        # workers going away during the stop must not read as a failure.
        self.notifier.stopping("stopping: draining requests, putting running jobs back")
        if self._watchdog is not None:
            self._watchdog.cancel()
        await super().shutdown(sockets=sockets)
