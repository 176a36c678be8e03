"""The deployment files, checked by the tools that will read them: ``systemd-analyze verify`` (and
its security score) on the unit and its GPU drop-in, ``nginx -t`` on the site and a real nginx in
front of an upstream that shows what it received, ``nft -c`` on generated rules and those rules
loaded into a pair of network namespaces, where they must let through exactly what they say."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

import hushscribe.deploy
from hushscribe.cli.deploy import app as deploy_app
from hushscribe.deploy import SAMPLES, sample
from hushscribe.security.tls import write_self_signed
from hushscribe.settings import AudioLimits, JobSettings
from tests.service import free_port

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "systemd" / "hushscribe.service"
GPU_DROP_IN = REPO / "deploy" / "systemd" / "gpu.conf"
SITE = REPO / "deploy" / "nginx" / "hushscribe.conf"
EXEC_START = "/opt/hushscribe/venv/bin/hushscribe --config /etc/hushscribe/hushscribe.toml serve"
MIB = 1024 * 1024


def test_deploy_folder_and_package_hold_one_copy() -> None:
    """deploy/ is what the docs point at, the package is what `hushscribe deploy` prints: the
    same files, not two copies that drift."""
    package = Path(hushscribe.deploy.__file__).parent
    for name, relative in SAMPLES.items():
        shipped = package / relative
        in_deploy = REPO / "deploy" / relative
        assert in_deploy.resolve() == shipped.resolve(), name
        assert sample(name) == shipped.read_text()
    for path in (UNIT, GPU_DROP_IN, SITE):
        assert path.is_file()


# --- systemd ----------------------------------------------------------------------------------


def service_section(text: str) -> dict[str, list[str]]:
    """[Service] directives → their values, in order (a key may repeat)."""
    section, found = "", dict[str, list[str]]()
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


REQUIRED = {
    "Type": "notify",
    "NotifyAccess": "main",
    "WatchdogSec": "30",
    "Restart": "on-failure",
    "KillMode": "mixed",
    "User": "hushscribe",
    "Group": "hushscribe",
    "ExecStart": EXEC_START,
    "StateDirectory": "hushscribe",
    "ConfigurationDirectory": "hushscribe",
    "UMask": "0077",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "IPAddressDeny": "any",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "RestrictRealtime": "yes",
    "SystemCallArchitectures": "native",
    "MemoryDenyWriteExecute": "no",
}


def test_unit_holds_the_hardening() -> None:
    unit = service_section(UNIT.read_text())
    for key, value in REQUIRED.items():
        assert unit.get(key) == [value], key
    assert unit["IPAddressAllow"] == ["localhost", "192.168.10.0/24"]
    assert unit["SystemCallFilter"][0] == "@system-service"
    assert re.fullmatch(r"\d+[KMGT]", unit["MemoryMax"][0])
    # Why MemoryDenyWriteExecute is off is said where it is set.
    text = UNIT.read_text()
    assert "JIT" in text[: text.index("MemoryDenyWriteExecute=no")].rsplit("\n\n", 1)[-1]


def analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def installable_unit(directory: Path, text: str | None = None) -> Path:
    """The unit with ExecStart pointing at this checkout's real `hushscribe` (verify checks that
    the program exists and is executable)."""
    program = Path(sys.executable).parent / "hushscribe"
    assert os.access(program, os.X_OK), program
    text = UNIT.read_text() if text is None else text
    assert EXEC_START in text
    unit = directory / "hushscribe.service"
    unit.write_text(text.replace(EXEC_START, f"{program} serve"))
    return unit


COMPLAINT = re.compile(r"unknown|ignoring|invalid|failed|not executable|error", re.IGNORECASE)


def test_systemd_analyze_verify_accepts_the_unit_and_its_gpu_drop_in(tmp_path: Path) -> None:
    unit = installable_unit(tmp_path)
    result = analyze("verify", "--man=no", str(unit), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not COMPLAINT.search(result.stderr), result.stderr

    drop_ins = tmp_path / "hushscribe.service.d"
    drop_ins.mkdir()
    (drop_ins / "gpu.conf").write_text(GPU_DROP_IN.read_text())
    result = analyze("verify", "--man=no", str(unit), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not COMPLAINT.search(result.stderr), result.stderr
    gpu = service_section(GPU_DROP_IN.read_text())
    assert gpu["PrivateDevices"] == ["no"] and gpu["DevicePolicy"] == ["closed"]
    assert gpu["DeviceAllow"] == [
        "char-nvidia-frontend rw", "char-nvidia-uvm rw", "char-nvidia-caps rw"
    ]  # fmt: skip

    # The check can fail: a misspelt directive is reported.
    (drop_ins / "gpu.conf").write_text("[Service]\nProtectSytem=strict\n")
    result = analyze("verify", "--man=no", str(unit), cwd=tmp_path)
    assert "Unknown key" in result.stderr and "ProtectSytem" in result.stderr


def test_systemd_security_score(tmp_path: Path) -> None:
    """`systemd-analyze security` rates exposure 0 (locked down) to 10; "OK" is below 5. The
    unit stays at most 2: a removed protection shows here."""
    unit = installable_unit(tmp_path)
    result = analyze("security", "--offline=yes", "--no-pager", str(unit), cwd=tmp_path)
    match = re.search(r"Overall exposure level for hushscribe.service: (\d+\.\d)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout
    weaker = installable_unit(tmp_path, UNIT.read_text().replace("ProtectSystem=strict", ""))
    result = analyze("security", "--offline=yes", "--no-pager", str(weaker), cwd=tmp_path)
    lowered = re.search(r"Overall exposure level for hushscribe.service: (\d+\.\d)", result.stdout)
    assert lowered and float(lowered.group(1)) > float(match.group(1))


# --- nginx ------------------------------------------------------------------------------------


def directive(text: str, name: str) -> list[str]:
    return re.findall(rf"^\s*{name}\s+([^;]+);", text, flags=re.MULTILINE)


def size_bytes(value: str) -> int:
    units = {"k": 1024, "m": MIB, "g": 1024 * MIB}
    return int(value[:-1]) * units[value[-1].lower()] if value[-1].isalpha() else int(value)


def seconds(value: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600}
    return int(value[:-1]) * units[value[-1]] if value[-1].isalpha() else int(value)


def test_nginx_limits_follow_the_settings() -> None:
    site = SITE.read_text()
    max_bytes = AudioLimits().max_bytes
    # audio.max_bytes plus 1 MiB for the multipart envelope: a file hushscribe accepts passes.
    assert [size_bytes(v) for v in directive(site, "client_max_body_size")] == [max_bytes + MIB]
    sync = JobSettings().sync_timeout_s
    for name in ("proxy_read_timeout", "proxy_send_timeout"):
        values = [seconds(v) for v in directive(site, name)]
        assert values and min(values) >= sync + 30, name
    assert directive(site, "ssl_protocols") == ["TLSv1.2 TLSv1.3"]
    assert directive(site, "proxy_request_buffering") == ["off"]
    assert directive(site, "deny") == ["all"]
    assert "192.168.10.0/24" in directive(site, "allow")
    headers = directive(site, "proxy_set_header")
    for header in ("X-Forwarded-For $remote_addr", "X-Forwarded-Proto $scheme", "Host $host"):
        assert header in headers
    assert directive(site, "add_header") == ['Strict-Transport-Security "max-age=63072000" always']
    realtime = site[site.index("location /v1/realtime") :]
    assert "proxy_set_header Upgrade $http_upgrade;" in realtime
    assert "proxy_set_header Connection $hushscribe_connection;" in realtime


def nginx_prefix(tmp_path: Path, site: str) -> Path:
    """A wrapper nginx.conf with everything nginx writes in ``tmp_path``, including ``site``
    with the certificate paths of a fresh self-signed certificate."""
    cert, key = tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem"
    write_self_signed(cert, key, ["localhost"], ["127.0.0.1"])
    site = site.replace("/etc/nginx/hushscribe/cert.pem", str(cert))
    site = site.replace("/etc/nginx/hushscribe/key.pem", str(key))
    (tmp_path / "hushscribe.conf").write_text(site)
    temp = "\n".join(
        f"    {kind}_temp_path {tmp_path / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    wrapper = tmp_path / "nginx.conf"
    wrapper.write_text(
        f"pid {tmp_path / 'nginx.pid'};\n"
        f"error_log {tmp_path / 'error.log'};\n"
        "events {}\n"
        "http {\n"
        f"    access_log {tmp_path / 'access.log'};\n{temp}\n"
        f"    include {tmp_path / 'hushscribe.conf'};\n"
        "}\n"
    )
    return wrapper


def nginx(*args: str, prefix: Path) -> list[str]:
    return ["nginx", "-p", str(prefix), "-e", str(prefix / "error.log"), *args]


def test_nginx_t_accepts_the_site(tmp_path: Path) -> None:
    wrapper = nginx_prefix(tmp_path, SITE.read_text())
    result = subprocess.run(
        nginx("-t", "-c", str(wrapper), prefix=tmp_path), capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr and "test is successful" in result.stderr
    # The check can fail: a misspelt directive is refused.
    nginx_prefix(tmp_path / "bad", SITE.read_text().replace("proxy_read_timeout", "proxy_rd"))
    bad = subprocess.run(
        nginx("-t", "-c", str(tmp_path / "bad" / "nginx.conf"), prefix=tmp_path / "bad"),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode != 0 and 'unknown directive "proxy_rd"' in bad.stderr


class _Echo(BaseHTTPRequestHandler):
    """The upstream: answers with the headers it received, and sets a session cookie."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Set-Cookie", "hs_session=abc; HttpOnly; Path=/; SameSite=Strict")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[str]:
    """The sample site in a real nginx on a free port, in front of :class:`_Echo`."""
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port = free_port()
    site = SITE.read_text().replace("listen [::]:8443 ssl;", f"listen [::1]:{port} ssl;")
    site = site.replace("listen 8443 ssl;", f"listen 127.0.0.1:{port} ssl;")
    site = site.replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream.server_port};")
    wrapper = nginx_prefix(tmp_path, site)
    command = nginx("-c", str(wrapper), "-g", "daemon off;", prefix=tmp_path)
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        try:
            for _ in range(200):
                assert proc.poll() is None, (tmp_path / "error.log").read_text()
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", port), 1),
                ):
                    break
                threading.Event().wait(0.05)
            else:
                pytest.fail("nginx does not listen")
            yield f"https://localhost:{port}"
        finally:
            proc.send_signal(signal.SIGQUIT)  # graceful stop of master and workers
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            upstream.shutdown()
            upstream.server_close()


def test_nginx_forwards_what_hushscribe_needs(proxied: str, tmp_path: Path) -> None:
    ca = str(tmp_path / "tls" / "cert.pem")
    with httpx.Client(base_url=proxied, verify=ssl.create_default_context(cafile=ca)) as client:
        r = client.get("/v1/models", headers={"X-Forwarded-For": "203.0.113.9"})
        assert r.status_code == 200
        seen = r.json()
        # The client's own X-Forwarded-For is replaced by the address nginx saw.
        assert seen["x-forwarded-for"] == "127.0.0.1"
        assert seen["x-forwarded-proto"] == "https"
        assert seen["host"] == seen["x-forwarded-host"] == "localhost"
        assert "upgrade" not in seen
        assert r.headers["strict-transport-security"] == "max-age=63072000"
        cookie = r.headers["set-cookie"].lower()
        assert "secure" in cookie and "httponly" in cookie
        assert r.headers.get("server") == "nginx"  # no version

        ws = client.get(
            "/v1/realtime", headers={"Upgrade": "websocket", "Connection": "Upgrade"}
        ).json()
        assert ws["upgrade"] == "websocket" and ws["connection"] == "upgrade"

    # An upload declared larger than audio.max_bytes and its allowance is refused at once, before
    # a byte of it is sent on.
    port = int(proxied.rsplit(":", 1)[1])
    context = ssl.create_default_context(cafile=ca)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        size = AudioLimits().max_bytes + 2 * MIB
        tls.sendall(
            b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/octet-stream\r\n"
            + f"Content-Length: {size}\r\n\r\n".encode()
        )
        assert tls.recv(4096).startswith(b"HTTP/1.1 413 ")


def test_nginx_refuses_addresses_outside_the_allow_list(proxied: str, tmp_path: Path) -> None:
    """127.0.0.2 is this machine too, but not in the site's `allow` lines."""
    transport = httpx.HTTPTransport(local_address="127.0.0.2", verify=False)
    url = proxied.replace("localhost", "127.0.0.1")
    with httpx.Client(transport=transport, timeout=30) as client:
        assert client.get(url + "/v1/models").status_code == 403


# --- nftables ---------------------------------------------------------------------------------

_names = itertools.count()


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@contextlib.contextmanager
def namespaces(count: int) -> Iterator[list[str]]:
    """``count`` fresh network namespaces with loopback up, removed afterwards."""
    names = [f"hsfw-{os.getpid()}-{next(_names)}" for _ in range(count)]
    try:
        for name in names:
            ip("netns", "add", name)
            ip("-n", name, "link", "set", "lo", "up")
        yield names
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30)


def rules(*args: str) -> str:
    result = CliRunner().invoke(deploy_app, ["firewall", *args])
    assert result.exit_code == 0, result.stderr
    return result.stdout


def in_ns(ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *args], capture_output=True, text=True, timeout=120
    )


def test_nft_accepts_generated_rules(tmp_path: Path) -> None:
    for fmt_args in (
        ["--lan", "192.168.10.0/24", "--lan", "fd00:10::/64", "--port", "8443"],
        ["--lan", "10.0.0.0/8", "--lan", "10.1.0.0/16", "--lan", "fd00::/48", "--port", "443",
         "--allow-out", "10.0.0.5:5432", "--allow-out", "10.9.0.0/24:636",
         "--allow-out", "[fd00::53]:53/udp", "--ssh-from", "10.99.0.0/24",
         "--ssh-from", "fd00:99::/64"],
    ):  # fmt: skip
        path = tmp_path / "rules.nft"
        path.write_text(rules(*fmt_args))
        with namespaces(1) as (ns,):
            result = in_ns(ns, "nft", "-c", "-f", str(path))
            assert result.returncode == 0, result.stderr
            assert in_ns(ns, "nft", "list", "ruleset").stdout == ""  # -c changed nothing
    path.write_text(path.read_text().replace("policy drop;", "policy dorp;"))
    with namespaces(1) as (ns,):
        assert in_ns(ns, "nft", "-c", "-f", str(path)).returncode != 0  # the check can fail


LISTEN = """
import selectors, socket, sys
sel = selectors.DefaultSelector()
for port in map(int, sys.argv[1:]):
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        s = socket.socket(family)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((host, port))
        s.listen()
        sel.register(s, selectors.EVENT_READ)
print("listening", flush=True)
while True:
    for key, _ in sel.select():
        conn, _ = key.fileobj.accept()
        conn.sendall(b"hi")
        conn.close()
"""

PROBE = """
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
def probe(spec):
    source, dest, port = spec.split(",")
    s = socket.socket(socket.AF_INET6 if ":" in dest else socket.AF_INET)
    s.settimeout(2)
    try:
        s.bind((source, 0))
        s.connect((dest, int(port)))
        return s.recv(2) == b"hi"
    except OSError:
        return False
    finally:
        s.close()
with ThreadPoolExecutor(len(sys.argv) - 1) as pool:
    print(json.dumps(list(pool.map(probe, sys.argv[1:]))))
"""


@contextlib.contextmanager
def listening(ns: str, *ports: int) -> Iterator[None]:
    command = ["ip", "netns", "exec", ns, sys.executable, "-c", LISTEN, *map(str, ports)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "listening"
            yield
        finally:
            proc.kill()
            proc.wait(timeout=10)


def probes(ns: str, specs: dict[str, str]) -> dict[str, bool]:
    """Each name → whether ``source,dest,port`` connected (from inside ``ns``)."""
    result = in_ns(ns, sys.executable, "-c", PROBE, *specs.values())
    assert result.returncode == 0, result.stderr
    return dict(zip(specs, json.loads(result.stdout), strict=True))


def test_nft_rules_let_through_exactly_what_they_say(tmp_path: Path) -> None:
    """Host A (the server) with the rules; host B holds one client address inside --lan and one
    outside, and the servers A may reach. Everything connects before the rules are loaded."""
    a4, b4, other4 = "10.251.7.1", "10.251.7.2", "10.251.7.3"
    a6, b6, other6 = "fd00:251:7::1", "fd00:251:7::2", "fd00:251:7::3"
    path = tmp_path / "rules.nft"
    path.write_text(
        rules("--lan", f"{b4}/32", "--lan", f"{b6}/128", "--port", "8443",
              "--allow-out", f"{b4}:5432", "--allow-out", f"[{b6}]:5432")
    )  # fmt: skip
    with namespaces(2) as (a, b):
        link = f"hf{os.getpid() % 10**7}"
        ip("link", "add", f"{link}a", "netns", a, "type", "veth", "peer", "name", f"{link}b",
           "netns", b)  # fmt: skip
        for ns, dev, addrs in (
            (a, f"{link}a", (a4, a6)),
            (b, f"{link}b", (b4, other4, b6, other6)),
        ):
            for addr in addrs:
                if ":" in addr:
                    ip("-n", ns, "-6", "addr", "add", f"{addr}/64", "dev", dev, "nodad")
                else:
                    ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
        into_a = {
            "lan v4 → service": f"{b4},{a4},8443",
            "lan v6 → service": f"{b6},{a6},8443",
            "outsider v4 → service": f"{other4},{a4},8443",
            "outsider v6 → service": f"{other6},{a6},8443",
            "lan → other port": f"{b4},{a4},9000",
        }
        out_of_a = {
            "→ allowed v4": f"{a4},{b4},5432",
            "→ allowed v6": f"{a6},{b6},5432",
            "→ other port": f"{a4},{b4},6000",
            "→ other host": f"{a4},{other4},5432",
            "loopback": "127.0.0.1,127.0.0.1,9000",
        }
        with listening(a, 8443, 9000), listening(b, 5432, 6000):
            assert all(probes(b, into_a).values())
            assert all(probes(a, out_of_a).values())
            load = in_ns(a, "nft", "-f", str(path))
            assert load.returncode == 0, load.stderr
            for ns in (a, b):  # IPv6 must find its neighbours again, through the rules
                ip("-n", ns, "neigh", "flush", "all")
            assert probes(b, into_a) == {
                "lan v4 → service": True,
                "lan v6 → service": True,
                "outsider v4 → service": False,
                "outsider v6 → service": False,
                "lan → other port": False,
            }
            assert probes(a, out_of_a) == {
                "→ allowed v4": True,
                "→ allowed v6": True,
                "→ other port": False,
                "→ other host": False,
                "loopback": True,
            }
        listed = in_ns(a, "nft", "list", "table", "inet", "hushscribe").stdout
        assert "policy drop" in listed
        # Reloading replaces the table instead of failing or doubling it.
        assert in_ns(a, "nft", "-f", str(path)).returncode == 0
        assert in_ns(a, "nft", "list", "tables").stdout.split() == ["table", "inet", "hushscribe"]
