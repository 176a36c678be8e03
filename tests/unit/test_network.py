"""Which address a request is judged by (``client_address``) and whether it may come in, and the
gate's answers in-process: the edge cases the namespaces of tests/e2e/test_network_access.py do not
reach (IPv6, mapped IPv4, long proxy chains, garbage, WebSockets, peers that are no address)."""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address, IPv6Address, ip_network

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from hushscribe.api.network_gate import NetworkGate, client_ip
from hushscribe.security.network import IPNetwork, client_address, is_allowed, parse_address
from hushscribe.settings import load_settings

PROXIES: list[IPNetwork] = [ip_network("10.0.0.0/24"), ip_network("fd00::/64")]


def ca(peer: str, *xff: str, trusted: list[IPNetwork] = PROXIES) -> str:
    return str(client_address(peer, list(xff), trusted))


def test_the_peer_is_the_client_unless_it_is_a_trusted_proxy() -> None:
    assert ca("192.0.2.5") == "192.0.2.5"
    assert ca("192.0.2.5", "10.1.1.1") == "192.0.2.5"  # untrusted peer: header ignored
    assert ca("10.0.0.2", "192.0.2.9") == "192.0.2.9"
    assert ca("10.0.0.2") == "10.0.0.2"  # a trusted proxy's own request
    assert ca("10.0.0.2", "") == "10.0.0.2"
    assert ca("10.0.0.2", " , ,") == "10.0.0.2"


def test_a_chain_is_walked_from_the_right_past_trusted_proxies_only() -> None:
    assert ca("10.0.0.2", "203.0.113.1, 192.0.2.9, 10.0.0.3, 10.0.0.4") == "192.0.2.9"
    # Several header lines are one list, in order.
    assert ca("10.0.0.2", "203.0.113.1, 192.0.2.9", "10.0.0.3") == "192.0.2.9"
    # Everything left of the first untrusted hop is the client's claim: never read.
    assert ca("10.0.0.2", "10.0.0.9, 192.0.2.9") == "192.0.2.9"
    # Only trusted hops: the farthest one.
    assert ca("10.0.0.2", "10.0.0.7, 10.0.0.3") == "10.0.0.7"


def test_garbage_stops_the_walk_at_the_last_trusted_hop() -> None:
    assert ca("10.0.0.2", "not-an-ip") == "10.0.0.2"
    assert ca("10.0.0.2", "192.0.2.9, garbage, 10.0.0.3") == "10.0.0.3"
    assert ca("10.0.0.2", "unknown") == "10.0.0.2"
    assert ca("10.0.0.2", "10.0.0.300") == "10.0.0.2"
    assert ca("10.0.0.2", "192.0.2.9:99999") == "10.0.0.2"  # not a port
    assert ca("10.0.0.2", "[::1") == "10.0.0.2"
    # Garbage left of the client changes nothing.
    assert ca("10.0.0.2", "garbage, 192.0.2.9") == "192.0.2.9"


def test_a_very_long_chain_is_cut() -> None:
    hops = ", ".join(["192.0.2.9"] + ["10.0.0.5"] * 200)
    assert ca("10.0.0.2", hops) == "10.0.0.5"  # stopped, judged as a trusted hop


def test_ipv6_mapped_ipv4_zones_and_ports() -> None:
    assert ca("::ffff:192.0.2.5") == "192.0.2.5"
    assert ca("::ffff:10.0.0.2", "192.0.2.9") == "192.0.2.9"  # a mapped proxy is still trusted
    assert ca("fd00::1", "2001:db8::7") == "2001:db8::7"
    assert ca("fd00::1", "[2001:db8::7]:443") == "2001:db8::7"
    assert ca("10.0.0.2", "192.0.2.9:8080") == "192.0.2.9"
    assert ca("10.0.0.2", "::ffff:192.0.2.9") == "192.0.2.9"
    assert ca("fe80::1%eth0") == "fe80::1"
    assert parse_address("2001:DB8::7") == IPv6Address("2001:db8::7")


def test_a_peer_that_is_no_address_is_an_error() -> None:
    for peer in ("", "testclient", "/run/hushscribe.sock"):
        with pytest.raises(ValueError):
            client_address(peer, ["192.0.2.9"], PROXIES)


def test_is_allowed() -> None:
    nets: list[IPNetwork] = [ip_network("10.20.0.0/16"), ip_network("::1/128")]
    assert is_allowed(IPv4Address("10.20.255.1"), nets)
    assert not is_allowed(IPv4Address("10.21.0.1"), nets)
    assert is_allowed(IPv6Address("::1"), nets)
    assert is_allowed(IPv6Address("::ffff:10.20.0.1"), nets)  # mapped: judged as IPv4
    assert not is_allowed(IPv6Address("::ffff:127.0.0.1"), nets)
    assert not is_allowed(IPv4Address("10.20.0.1"), [])
    assert is_allowed(ipaddress.ip_address("0.0.0.1"), [ip_network("0.0.0.0/0")])
    assert not is_allowed(IPv6Address("::1"), [ip_network("0.0.0.0/0")])


# --- the gate, in process -------------------------------------------------------------------


def _gated_app(tmp_path_str: str, **network: object) -> NetworkGate:
    async def whoami(request: Request) -> JSONResponse:
        return JSONResponse(
            {"client_ip": client_ip(request), "body": (await request.body()).decode()}
        )

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(client_ip(websocket))
        await websocket.close()

    app = Starlette(routes=[Route("/", whoami, methods=["GET", "POST"]), WebSocketRoute("/ws", ws)])
    settings = load_settings(None, data_dir=tmp_path_str, network=network)
    return NetworkGate(app, settings)


def test_the_gate_passes_the_decided_address_on(tmp_path: object) -> None:
    app = _gated_app(str(tmp_path), allow=["192.0.2.0/24"], trusted_proxies=["10.0.0.2/32"])
    with TestClient(app, client=("10.0.0.2", 5000)) as client:
        r = client.post("/", headers={"X-Forwarded-For": "192.0.2.44"}, content=b"hello")
        assert r.status_code == 200 and r.json() == {"client_ip": "192.0.2.44", "body": "hello"}
        with client.websocket_connect("/ws", headers={"X-Forwarded-For": "192.0.2.45"}) as ws:
            assert ws.receive_text() == "192.0.2.45"


def test_the_gate_refuses_http_and_websockets_without_reading(tmp_path: object) -> None:
    app = _gated_app(str(tmp_path), allow=["192.0.2.0/24"])
    for peer in ("198.51.100.1", "testclient"):
        with TestClient(app, client=(peer, 5000)) as client:
            r = client.post("/", headers={"X-Forwarded-For": "192.0.2.44"}, content=b"x" * 1000)
            assert r.status_code == 403
            assert r.json()["error"]["code"] == "address_not_allowed"
            assert "192.0.2.44" not in r.text and peer not in r.text
            assert r.headers["connection"] == "close"
            with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect("/ws"):
                pass
            assert closed.value.code == 1008


def test_a_refusal_never_calls_receive(tmp_path: object) -> None:
    """The body stays unread: the 403 is sent without the gate ever asking for a body chunk."""
    import asyncio

    gate = _gated_app(str(tmp_path), allow=["192.0.2.0/24"])
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        raise AssertionError("the gate read the request body")

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "method": "POST", "path": "/", "raw_path": b"/", "query_string": b"",
        "headers": [(b"content-length", b"50000000")], "client": ("198.51.100.1", 5000),
        "server": ("127.0.0.1", 80), "scheme": "http", "http_version": "1.1", "root_path": "",
        "asgi": {"version": "3.0"},
    }  # fmt: skip
    asyncio.run(gate(scope, receive, send))  # type: ignore[arg-type]
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 403
    assert b"address_not_allowed" in sent[1]["body"]  # type: ignore[operator]
