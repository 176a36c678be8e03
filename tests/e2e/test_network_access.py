"""The source-address allowlist against a real server, from real source addresses.

Three network namespaces are the hosts: A inside ``network.allow``, B outside it, C a trusted
reverse proxy (outside the allowlist itself). The server runs here, bound to ``0.0.0.0``, and each
namespace reaches it over its own veth, so the server sees the namespace's address as the peer,
exactly as it would a machine on the network.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.netns import Lab, Namespace
from tests.service import KEYS, Service, service_data_dir

pytestmark = pytest.mark.skipif(
    not Path("/usr/sbin/ip").exists() and not Path("/sbin/ip").exists(), reason="needs iproute2"
)

OUTSIDE = "10.99.9.9"
"""An address no allowlist here names (only ever written into headers, never sent to)."""
AUTH = {"Authorization": f"Bearer {KEYS['alice']}"}
UPLOAD_BYTES = 50 * 1000 * 1000
"""What the refused upload declares: far more than it will have sent when the 403 comes."""


@dataclass
class Net:
    svc: Service
    a: Namespace  # inside the allowlist
    b: Namespace  # outside it
    c: Namespace  # a trusted proxy, itself outside the allowlist
    allowed_client: str  # an address in A's network, as a proxy would forward it

    def url(self, ns: Namespace, path: str) -> str:
        """``path`` on the server as seen from ``ns``."""
        return f"http://{ns.gateway}:{self.svc.port}{path}"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    with Lab() as lab:
        a, b, c = lab.add(), lab.add(), lab.add()
        root = service_data_dir(tmp_path_factory.mktemp("netaccess"), None)
        svc = Service(
            root,
            host="0.0.0.0",  # every veth's root end; from here the probe arrives on loopback
            env={
                "HUSHSCRIBE_NETWORK__ALLOW": json.dumps([str(lab.net(1)), "127.0.0.0/8"]),
                "HUSHSCRIBE_NETWORK__TRUSTED_PROXIES": json.dumps([f"{c.address}/32"]),
            },
        )
        try:
            svc.start(wait_ready=False)
            yield Net(svc, a, b, c, allowed_client=str(lab.net(1)[7]))
        finally:
            svc.stop()


def _refused(answer: dict[str, Any]) -> None:
    assert answer["status"] == 403, answer
    error = json.loads(answer["text"])["error"]
    assert error["code"] == "address_not_allowed", error
    assert error["type"] == "permission_error", error


def _models(answer: dict[str, Any]) -> None:
    assert answer["status"] == 200, answer
    assert json.loads(answer["text"])["object"] == "list", answer


def test_a_client_inside_the_allowlist_is_served(net: Net) -> None:
    health, models = net.a.requests(
        [
            {"method": "GET", "url": net.url(net.a, "/healthz")},
            {"method": "GET", "url": net.url(net.a, "/v1/models"), "headers": AUTH},
        ]
    )
    assert health["status"] == 200 and json.loads(health["text"]) == {"status": "ok"}, health
    _models(models)


def test_a_client_outside_is_refused_before_authentication_and_routing(net: Net) -> None:
    answers = net.b.requests(
        [
            {"method": "GET", "url": net.url(net.b, "/healthz")},
            {"method": "GET", "url": net.url(net.b, "/v1/models"), "headers": AUTH},
            {"method": "GET", "url": net.url(net.b, "/v1/models")},  # no key: 403, not 401
            {"method": "PUT", "url": net.url(net.b, "/v1/no-such-route"), "headers": AUTH},
        ]
    )
    for answer in answers:
        _refused(answer)
    # The same requests from an allowed host get their usual answers: the address decided it.
    health, no_key = net.a.requests(
        [
            {"method": "GET", "url": net.url(net.a, "/healthz")},
            {"method": "GET", "url": net.url(net.a, "/v1/models")},
        ]
    )
    assert health["status"] == 200 and no_key["status"] == 401, (health, no_key)


_EARLY_ANSWER = """
import json, select, socket, sys, time
spec = json.load(sys.stdin)
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)  # sent ~ what the server could read
sock.settimeout(10)
sock.connect((spec["host"], spec["port"]))
boundary = "b" * 16
head = (
    "POST /v1/audio/transcriptions HTTP/1.1\\r\\nHost: x\\r\\n"
    f"Authorization: Bearer {spec['key']}\\r\\n"
    f"Content-Type: multipart/form-data; boundary={boundary}\\r\\n"
    f"Content-Length: {spec['length']}\\r\\n\\r\\n"
    f"--{boundary}\\r\\nContent-Disposition: form-data; name=\\"file\\"; filename=\\"a.wav\\"\\r\\n"
    "Content-Type: audio/wav\\r\\n\\r\\n"
).encode()
sock.sendall(head)
sent, answered, deadline = 0, False, time.monotonic() + 20
while sent < spec["length"] and time.monotonic() < deadline:
    if select.select([sock], [], [], 0.02)[0]:  # streamed slowly: look for an answer between sends
        answered = True
        break
    try:
        sent += sock.send(b"\\0" * 4096)
    except (BrokenPipeError, ConnectionResetError):
        break
raw = b""
try:
    while select.select([sock], [], [], 5)[0]:
        data = sock.recv(65536)
        if not data:
            break
        raw += data
except ConnectionResetError:
    pass
print(json.dumps({"sent": sent, "answered": answered, "raw": raw.decode("latin-1")}))
"""


def test_a_refused_upload_is_answered_before_its_body_is_sent(net: Net) -> None:
    spec = {"host": net.b.gateway, "port": net.svc.port, "key": KEYS["alice"]}
    out = json.loads(
        net.b.python(_EARLY_ANSWER, input=json.dumps({**spec, "length": UPLOAD_BYTES}))
    )
    assert out["answered"], f"no answer after {out['sent']:,} body bytes"
    assert out["sent"] < UPLOAD_BYTES // 100, f"answered only after {out['sent']:,} bytes"
    head, _, body = out["raw"].partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 403 "), out["raw"][:300]
    assert "connection: close" in head.lower(), head
    assert json.loads(body)["error"]["code"] == "address_not_allowed"
    assert list((net.svc.data_dir / "blobs").iterdir()) == [], "a refused upload left a file"


def test_a_trusted_proxy_forwards_the_client_address(net: Net) -> None:
    url = net.url(net.c, "/v1/models")
    inside, outside, chain, forged_left, garbage, none = net.c.requests(
        [
            {"method": "GET", "url": url, "headers": {**AUTH, "X-Forwarded-For": ip}}
            for ip in (
                net.allowed_client,
                OUTSIDE,
                f"{OUTSIDE}, {net.allowed_client}",  # the proxy appended the right-most entry
                f"{net.allowed_client}, {OUTSIDE}",  # the client wrote the left one itself
                "not-an-address",
            )
        ]
        + [{"method": "GET", "url": url, "headers": AUTH}]  # the proxy's own request
    )
    _models(inside)
    _models(chain)
    for answer in (outside, forged_left, garbage, none):
        _refused(answer)  # judged by the forwarded client, or else by the proxy: both outside


def test_a_forged_header_from_an_untrusted_host_is_ignored(net: Net) -> None:
    forged = {**AUTH, "X-Forwarded-For": net.allowed_client}
    _refused(net.b.request("GET", net.url(net.b, "/v1/models"), headers=forged))
    # Nor does the header narrow: an allowed host claiming to be elsewhere is judged by its socket.
    _models(
        net.a.request(
            "GET", net.url(net.a, "/v1/models"), headers={**AUTH, "X-Forwarded-For": OUTSIDE}
        )
    )
    # Loopback is allowed and is no trusted proxy here. (uvicorn believes X-Forwarded-For from
    # 127.0.0.1 by default and rewrites the peer; serve turns that off, or this would be 403.)
    with net.svc.client() as client:
        r = client.get("/v1/models", headers={"X-Forwarded-For": OUTSIDE})
    assert r.status_code == 200, r.text


def test_neither_answer_nor_log_repeats_a_forged_header(net: Net) -> None:
    marker = f"forged-{secrets.token_hex(6)}"
    headers = {**AUTH, "X-Forwarded-For": f"{marker}, {net.allowed_client}"}
    from_b = net.b.request("GET", net.url(net.b, "/v1/models"), headers=headers)
    from_c = net.c.request(
        "GET", net.url(net.c, "/v1/models"), headers={**AUTH, "X-Forwarded-For": marker}
    )
    for answer in (from_b, from_c):
        _refused(answer)
        assert marker not in answer["text"] and marker not in json.dumps(answer["headers"])
    with httpx.Client(timeout=10) as client:  # the server is still up, and has logged no marker
        assert client.get(net.svc.url + "/healthz").status_code == 200
    assert marker not in net.svc.log()
