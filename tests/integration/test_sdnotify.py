"""systemd's notification protocol: a real ``hushscribe serve`` started as systemd would
(``NOTIFY_SOCKET``, ``WATCHDOG_USEC``) says READY=1 only once it listens, pings the watchdog from
its event loop, and says STOPPING=1 on SIGTERM; and the protocol itself (no socket, a path, an
abstract socket, the watchdog's pace and its silence while no worker lives)."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from hushscribe.sdnotify import Notifier, keep_alive, watchdog_interval
from tests.service import Service, service_data_dir


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound where systemd's would be (a short path: sun_path holds 108)."""
    directory = Path(tempfile.mkdtemp(prefix="hs-notify-"))
    path = directory / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    try:
        yield sock, str(path)
    finally:
        sock.close()
        path.unlink(missing_ok=True)
        directory.rmdir()


def receive(sock: socket.socket, timeout: float) -> list[str] | None:
    sock.settimeout(timeout)
    try:
        return sock.recv(4096).decode().split("\n")
    except TimeoutError:
        return None


def test_serve_notifies_ready_watchdog_and_stopping(
    tmp_path: Path, data_dir: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, address = notify_socket
    root = service_data_dir(tmp_path / "data", data_dir / "models")
    svc = Service(root, env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "2000000"})
    starter = threading.Thread(target=svc.start, kwargs={"wait_ready": False}, daemon=True)
    starter.start()
    try:
        messages: list[tuple[float, list[str]]] = []
        deadline = time.monotonic() + 120
        while not any("READY=1" in fields for _, fields in messages):
            fields = receive(sock, max(0.1, deadline - time.monotonic()))
            assert fields is not None, f"no READY=1 in 120 s; got {messages}:\n{svc.log()}"
            messages.append((time.monotonic(), fields))
            if "READY=1" in fields:
                # Freeze the server the moment it says it is ready: its port must already
                # accept connections (the kernel completes them for a listening socket).
                assert svc.proc is not None
                os.kill(svc.proc.pid, signal.SIGSTOP)
                server = psutil.Process(svc.proc.pid)
                stop_by = time.monotonic() + 10
                while server.status() != psutil.STATUS_STOPPED:
                    assert time.monotonic() < stop_by, server.status()
                    time.sleep(0.001)
                try:
                    with socket.create_connection((svc.host, svc.port), timeout=5):
                        pass
                finally:
                    os.kill(svc.proc.pid, signal.SIGCONT)
        ready = messages[-1][1]
        assert [f for f in ready if f.startswith("STATUS=")] == [
            f"STATUS=serving on http://{svc.host}:{svc.port}"
        ]
        assert not [m for m in messages[:-1] if "WATCHDOG=1" in m[1]]  # none before READY=1
        assert httpx.get(svc.url + "/healthz", timeout=10).status_code == 200

        pings = []
        until = time.monotonic() + 5
        while time.monotonic() < until:
            fields = receive(sock, max(0.01, until - time.monotonic()))
            if fields is not None and "WATCHDOG=1" in fields:
                pings.append(time.monotonic())
        # WATCHDOG_USEC=2 s: a ping every second (never a flood).
        assert len(pings) >= 2, pings
        assert all(b - a > 0.5 for a, b in itertools.pairwise(pings)), pings

        starter.join(timeout=120)
        assert svc.stop() == 0, svc.log()
        rest = []
        while (fields := receive(sock, 0.5)) is not None:
            rest.append(fields)
        stopping = [fields for fields in rest if "STOPPING=1" in fields]
        assert len(stopping) == 1, rest
        assert stopping[0][1].startswith("STATUS=stopping")
        # No ping after STOPPING=1: systemd no longer expects them.
        after = rest[rest.index(stopping[0]) + 1 :]
        assert not [fields for fields in after if "WATCHDOG=1" in fields], rest
    finally:
        svc.stop()


# --- the protocol ----------------------------------------------------------------------------


def test_without_notify_socket_nothing_is_sent() -> None:
    quiet = Notifier.from_environ({})
    assert not quiet.enabled
    assert quiet.ready("serving") is False
    assert quiet.watchdog() is False and quiet.stopping("bye") is False
    assert Notifier.from_environ({"NOTIFY_SOCKET": ""}).enabled is False
    assert Notifier.from_environ({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled is False
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None


def test_watchdog_interval_is_half_the_timeout_for_this_process_only() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    me = str(os.getpid())
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": me}) == 1.0
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) is None


def test_abstract_socket() -> None:
    name = f"hushscribe-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": "@" + name})
        assert notifier.enabled
        assert notifier.ready("serving on\nhttp://x") is True
        sock.settimeout(5)
        # One datagram; a newline inside a value would start a new field, so it is flattened.
        assert sock.recv(4096) == b"READY=1\nSTATUS=serving on http://x"


def test_a_socket_that_is_gone_is_a_warning_not_a_crash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(str(tmp_path / "no-such-socket"))
    assert notifier.enabled
    assert notifier.watchdog() is False
    assert "cannot notify systemd" in caplog.text


def test_keep_alive_pings_only_while_workers_live(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, address = notify_socket
    alive = [True]

    async def scenario() -> None:
        task = asyncio.create_task(
            keep_alive(Notifier(address), 0.05, lambda: alive[0], lambda: "serving")
        )
        await asyncio.sleep(0.3)
        alive[0] = False
        await asyncio.sleep(0.3)
        alive[0] = True
        await asyncio.sleep(0.3)
        task.cancel()

    asyncio.run(scenario())
    received = []
    while (fields := receive(sock, 0.2)) is not None:
        received.append("\n".join(fields))
    down = received.index("STATUS=no live worker process: watchdog pings held back")
    up = received.index("STATUS=serving")
    assert down < up
    assert received[:down] and set(received[:down]) == {"WATCHDOG=1"}
    assert received[down + 1 : up] == []  # silence while no worker lives
    assert received[up + 1 :] and set(received[up + 1 :]) == {"WATCHDOG=1"}
