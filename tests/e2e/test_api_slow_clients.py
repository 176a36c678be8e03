"""Clients that hold connections without finishing their request head (slowloris) against a real
server: they are closed after ``server.header_timeout_s``, real requests go on being answered,
connections past ``server.max_connections`` are closed at once, and the log says so in a line,
not in a traceback per connection. Only 127.0.0.1 is a target, with a few dozen sockets."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service import Service, service_data_dir

SLOW = 50
"""Slow connections opened: enough to see a flood handled, few enough for a small machine."""
PARTIAL_HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Service]:
    root = service_data_dir(tmp_path_factory.mktemp("slow-clients"), data_dir / "models")
    svc = Service(
        root,
        env={
            "HUSHSCRIBE_SERVER__HEADER_TIMEOUT_S": "1",
            "HUSHSCRIBE_SERVER__MAX_CONNECTIONS": "60",
        },
    )
    try:
        svc.start(wait_ready=False)
        yield svc
    finally:
        svc.stop()


def _closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed ``sock`` (whatever it sent before closing)."""
    while select.select([sock], [], [], 0)[0]:
        try:
            if not sock.recv(65536):
                return True
        except ConnectionError:
            return True
    return False


def _open(port: int, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        socks.append(sock)
    return socks


def test_slow_request_heads_are_closed_and_others_still_served(guarded: Service) -> None:
    socks = _open(guarded.port, SLOW)
    opened = time.monotonic()
    closed_after: dict[int, float] = {}
    healthz: list[int] = []
    try:
        for sock in socks:
            sock.sendall(PARTIAL_HEAD)
        deadline = opened + 15
        while len(closed_after) < SLOW and time.monotonic() < deadline:
            for i, sock in enumerate(socks):
                if i in closed_after:
                    continue
                if _closed_by_server(sock):
                    closed_after[i] = time.monotonic() - opened
                    continue
                try:
                    sock.sendall(b"X-Slow: 1\r\n")  # a header line now and then, never the end
                except ConnectionError:
                    closed_after[i] = time.monotonic() - opened
            if not healthz:  # a real request while the slow ones hold their connections
                response = httpx.get(guarded.url + "/healthz", timeout=5)
                healthz.append(response.status_code)
            time.sleep(0.25)
    finally:
        for sock in socks:
            sock.close()

    assert healthz == [200]
    assert len(closed_after) == SLOW, f"{SLOW - len(closed_after)} slow connections still open"
    assert min(closed_after.values()) >= 0.5, "closed before the header timeout"
    log = guarded.log()
    assert "Traceback" not in log, log[-3000:]
    assert log.count("request head") <= 2, log[-3000:]
    assert "request head was not complete within 1 s" in log, log[-3000:]


def test_connections_past_the_cap_are_closed_at_once(guarded: Service) -> None:
    socks = _open(guarded.port, 70)  # 60 allowed
    try:
        opened = time.monotonic()
        refused: set[int] = set()
        while len(refused) < 10 and time.monotonic() < opened + 0.9:  # before the head timeout
            refused |= {i for i, s in enumerate(socks) if i not in refused and _closed_by_server(s)}
            time.sleep(0.02)
        assert len(refused) == 10, refused
        assert min(refused) >= 60 - 2, refused  # the last ones to come (a closed slot or two)
    finally:
        for sock in socks:
            sock.close()
    # The slots come back: a real request is served once the held connections are gone.
    deadline = time.monotonic() + 10
    while True:
        try:
            if httpx.get(guarded.url + "/healthz", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "not served after the held connections closed"
        time.sleep(0.1)
    log = guarded.log()
    assert "Traceback" not in log, log[-3000:]
    assert log.count("connection limit") <= 2, log[-3000:]
    assert "server.max_connections" in log, log[-3000:]
