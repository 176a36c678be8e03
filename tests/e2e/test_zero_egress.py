"""Proof on the wire that ``hushscribe serve`` connects to nothing: every packet it sends or
receives belongs to a connection its client opened to its port.

The server runs in a network namespace of its own, with the settings a user gets (two workers,
30 s leases, the default model), reached over a veth from this namespace (the client). IPv6 is off
on that link (both ends), so the kernels' router solicitations and MLD reports do not muddy the
capture, and the namespace's default route leads into a sink (``Namespace.sink_default_route``):
a packet for any other address is really sent, and captured, then dropped in the namespace —
without that route a careless connect would fail before any packet existed, and the capture
would prove nothing. A name lookup goes to the namespace's own address (its ``resolv.conf``),
over loopback, where the capture sees it too. ``tcpdump -i any`` inside the namespace (the veth,
the sink and loopback) runs from before the server starts until after it has exited: start-up,
the page and its assets, sign-in, a transcription, a job, a translation, half a minute idle,
shutdown by SIGTERM.

A second test runs the server where there is nothing but loopback; a third asks it for things
that would reach out if the product were careless (models it does not have, media that point at
URLs), with proxy variables set, and watches a trap listening where the proxies point; the last
is the control: the same capture and analysis do see a careless process's connections and
lookups.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests import pcap
from tests.netns import Lab, Namespace, isolated
from tests.service import ADMIN_PASSWORD, KEYS, free_port, service_data_dir
from tests.speech import clip, normalise

pytestmark = pytest.mark.slow

JFK = "ask not what your country can do for you"
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "ftp_proxy", "no_proxy")
HUSHSCRIBE = Path(sys.executable).with_name("hushscribe")
"""The installed command, as a user runs it."""
SNAPLEN = 512
"""Bytes kept of each frame: every header, and the start of the payload."""
READY_S = 180
"""Two workers loading the default model on a shared 2-core machine."""
OFF_SWITCHES = (
    "ORT_DISABLE_TELEMETRY", "HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY", "TRANSFORMERS_OFFLINE",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN", "DO_NOT_TRACK",
)  # fmt: skip
"""Variables that turn a library's network use off: a user's environment need not have them, so
the server is started without them and must set what it needs itself."""
IDLE_S = 30
"""How long the server idles after the last request, before it is stopped: what it does on its
own shows up too. onnxruntime 1.32 (Silero VAD) first tries to send its telemetry about 20 s after
its first session unless ORT_DISABLE_TELEMETRY is set before it is imported."""


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without hushscribe settings, proxy variables or the libraries'
    off switches, plus ``extra``."""
    drop = {*PROXY_VARIABLES, *(v.upper() for v in PROXY_VARIABLES), *OFF_SWITCHES}
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUSHSCRIBE_") and k not in drop}
    return {**env, "HUSHSCRIBE_ADMIN_PASSWORD": ADMIN_PASSWORD, **extra}


@dataclass
class Tcpdump:
    """``tcpdump -i any`` in a namespace, writing every frame to a file as it comes (``-U``)."""

    ns: Namespace
    path: Path
    proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        err = self.path.with_suffix(".err")
        # -s: headers and the start of a payload (a DNS query's name, a request line) are what a
        # stray packet is judged by; lengths come from the IP header. -B: on loopback a packet
        # is up to 64 KiB, and the default 2 MiB ring overflows during an upload. -Z root:
        # Debian's tcpdump would drop to a user that cannot write into pytest's directory.
        args = ["-i", "any", "-nn", "-U", "-s", str(SNAPLEN), "-B", "65536", "-Z", "root"]
        with err.open("w") as fh:
            self.proc = self.ns.popen(
                ["tcpdump", *args, "-w", str(self.path)], stdout=subprocess.DEVNULL, stderr=fh
            )
        deadline = time.monotonic() + 30
        while "listening on" not in err.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tcpdump did not start: {err.read_text()}")
            time.sleep(0.05)

    def stop(self) -> list[pcap.Frame]:
        """Stop it (SIGINT: it flushes and prints its counts) and read the capture."""
        assert self.proc is not None
        time.sleep(1)  # whatever the exit set off (FINs, a late retry) is on the wire by now
        self.proc.send_signal(signal.SIGINT)
        assert self.proc.wait(timeout=30) == 0
        report = self.path.with_suffix(".err").read_text()
        assert re.search(r"\b0 packets dropped by kernel", report), report
        linktype, frames = pcap.read(self.path)
        assert linktype in (pcap.LINKTYPE_LINUX_SLL, pcap.LINKTYPE_LINUX_SLL2), linktype
        return frames

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@dataclass
class Server:
    """``hushscribe serve`` inside ``ns``, configured by a TOML file as a user would."""

    ns: Namespace
    data_dir: Path
    port: int = field(default_factory=free_port)  # any port is free in a fresh namespace
    proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.ns.address}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "serve.log"

    def start(self, allow: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        config = self.data_dir / "hushscribe.toml"
        lines = [
            f'data_dir = "{self.data_dir}"',
            "[server]",
            f'host = "{self.ns.address}"',
            f"port = {self.port}",
            "[auth]",
            f'api_keys = {{ alice = "{KEYS["alice"]}" }}',
        ]
        if allow is not None:
            lines += ["[network]", f"allow = {json.dumps(allow)}"]
        config.write_text("\n".join(lines) + "\n")
        with self.log_path.open("w") as log:
            self.proc = self.ns.popen(
                [str(HUSHSCRIBE), "--config", str(config), "serve"],
                env=env or _clean_env(), stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, client: httpx.Client) -> None:
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.TransportError):
                if client.get("/readyz", timeout=2).status_code == 200:
                    # `ip netns exec` entered the namespace and exec'd the command: this PID is
                    # the server's own, and SIGTERM goes to it.
                    assert Path(psutil.Process(self.proc.pid).cmdline()[0]).name != "ip"
                    return
            time.sleep(0.3)
        raise RuntimeError(f"serve not ready in {READY_S} s:\n{self.log()[-5000:]}")

    def stop(self) -> int:
        """SIGTERM, as systemd stops it; its exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=90)

    def kill(self) -> None:
        """After a failure: the server and its workers, by PID."""
        if self.proc is None or self.proc.poll() is not None:
            return
        procs = []
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.append(psutil.Process(self.proc.pid))
            procs += procs[0].children(recursive=True)
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(procs, timeout=30)
        self.proc.wait(timeout=30)


@contextlib.contextmanager
def captured(ns: Namespace, path: Path, server: Server) -> Iterator[Tcpdump]:
    """tcpdump running in ``ns`` around the whole life of ``server`` (started by the body)."""
    dump = Tcpdump(ns, path)
    dump.start()
    try:
        yield dump
    finally:
        server.kill()
        dump.kill()


def only_the_clients_connections(
    frames: list[pcap.Frame], client: str, server: Server, record: Callable[[str, Any], None]
) -> pcap.Traffic:
    """Every frame belongs to a connection ``client`` opened to the server's port; prints and
    records the counts (pytest ``-rP`` shows them; the JUnit report keeps them)."""
    traffic = pcap.client_traffic(frames, client, server.ns.address, server.port)
    totals = traffic.totals()
    print(f"capture {client} -> {server.ns.address}:{server.port}: {json.dumps(totals)}")
    record("traffic", json.dumps(totals))
    assert not traffic.foreign, (
        f"{len(traffic.foreign)} frames that are not {client}'s connections to the server's port "
        f"(capture: {server.data_dir.parent}):\n{traffic.foreign_summary()}"
    )
    assert traffic.connections, "the capture holds none of the client's connections"
    assert "egress blocked" not in server.log().lower(), server.log()[-5000:]
    return traffic


def _words(text: str) -> str:
    return normalise(text, "en")


def _upload(name: str) -> dict[str, tuple[str, bytes, str]]:
    path = clip(name).path
    return {"file": (path.name, path.read_bytes(), "application/octet-stream")}


def _load_page(browser: httpx.Client) -> list[str]:
    """What a browser fetches for ``/``: the html, then every asset it names, the modules the
    scripts import and the strings the page reads; each must be there. The paths fetched."""
    page = browser.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"], page.text
    queue = re.findall(r'(?:href|src)="(/ui/[^"#?]+)"', page.text)
    queue += ["/ui/strings/en.json", "/ui/strings/zh.json"]  # i18n.js builds this URL
    fetched: list[str] = ["/"]
    while queue:
        path = queue.pop()
        if path in fetched:
            continue
        r = browser.get(path)
        assert r.status_code == 200 and r.content, (path, r.status_code)
        fetched.append(path)
        if path.endswith(".js"):
            for rel in re.findall(
                r"""(?:\bfrom|\bimport)\s*\(?\s*['"](\.\.?/[^'"]+)['"]""", r.text
            ):
                queue.append(posixpath.normpath(posixpath.join(posixpath.dirname(path), rel)))
    return fetched


def _ended(client: httpx.Client, job: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """The result of ``job`` (JSON) once it has ended (a failed job's answer carries its error)."""
    deadline = time.monotonic() + 300
    while client.get(f"/v1/jobs/{job}", headers=headers).json()["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, f"job {job} did not end"
        time.sleep(0.3)
    return client.get(f"/v1/jobs/{job}/result", headers=headers, params={"format": "json"})


def test_serving_the_page_the_api_and_jobs_sends_nothing_but_answers(
    tmp_path: Path, data_dir: Path, record_property: Callable[[str, Any], None]
) -> None:
    uploads = [
        _upload("jfk.flac"),
        _upload("1089-134691-0001.flac"),
        _upload("cheetah_test_pt.wav"),
    ]
    sent = sum(len(u["file"][1]) for u in uploads)
    received = 0
    with Lab() as lab:
        ns = lab.add()
        ns.disable_ipv6()
        ns.sink_default_route()
        root = service_data_dir(tmp_path / "data", data_dir / "models")
        server = Server(ns, root)
        with captured(ns, tmp_path / "serve.pcap", server) as dump:
            server.start(allow=[f"{ns.gateway}/32"])
            key = {"Authorization": f"Bearer {KEYS['alice']}"}
            with (
                httpx.Client(base_url=server.url, timeout=300, trust_env=False) as api,
                httpx.Client(base_url=server.url, timeout=300, trust_env=False) as browser,
            ):
                server.wait_ready(api)
                # The page, then signing in as the first admin, then what the page asks for.
                fetched = _load_page(browser)
                assert {"/ui/js/main.js", "/ui/app.css", "/ui/js/api.js"} <= set(fetched)
                login = browser.post(
                    "/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
                )
                assert login.status_code == 200, login.text
                assert login.json()["user"]["role"] == "admin"
                browser.headers["X-CSRF-Token"] = login.json()["csrf_token"]
                for path in ("/v1/auth/session", "/v1/models", "/v1/jobs?limit=100"):
                    assert browser.get(path).status_code == 200, path
                # A transcription through the OpenAI-compatible API, with an API key.
                r = api.post(
                    "/v1/audio/transcriptions", headers=key, files=uploads[0],
                    data={"model": "whisper-1"},
                )  # fmt: skip
                assert r.status_code == 200, r.text
                assert JFK in _words(r.json()["text"]), r.text
                received += len(r.content)
                # A job from the page's session: queued, polled to done, its result read.
                r = browser.post("/v1/jobs", files=uploads[1], data={"language": "en"})
                assert r.status_code == 202, r.text
                r = _ended(browser, r.json()["id"])
                assert r.status_code == 200, r.text
                assert "he could wait no longer" in _words(r.json()["text"]), r.text
                received += len(r.content)
                # A translation to English, of Portuguese.
                r = api.post(
                    "/v1/audio/translations", headers=key, files=uploads[2],
                    data={"model": "whisper-1", "response_format": "verbose_json"},
                )  # fmt: skip
                assert r.status_code == 200, r.text
                text = _words(r.json()["text"])
                assert r.json()["language"] == "portuguese", r.text
                assert {"group", "children", "river"} <= set(text.split()), text
                received += len(r.content)
            time.sleep(IDLE_S)
            assert server.stop() == 0, server.log()[-5000:]
            frames = dump.stop()
    traffic = only_the_clients_connections(frames, ns.gateway, server, record_property)
    totals = traffic.totals()
    # The capture saw the whole exchange: every upload's bytes went in, every answer came out.
    assert totals["data_bytes_to_server"] > sent, totals
    assert totals["data_bytes_to_client"] > received, totals
    assert totals["connections"] >= 2, totals


_ISOLATED_CLIENT = """
import json, sys, time
import httpx
spec = json.load(sys.stdin)
with httpx.Client(base_url=spec["url"], timeout=300, trust_env=False) as client:
    deadline = time.monotonic() + spec["wait_s"]
    while True:
        try:
            if client.get("/readyz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            sys.exit("server not ready")
        time.sleep(0.3)
    with open(spec["audio"], "rb") as fh:
        r = client.post("/v1/audio/transcriptions", files={"file": ("jfk.flac", fh)},
                        data={"model": "whisper-1"},
                        headers={"Authorization": "Bearer " + spec["key"]})
print(json.dumps({"status": r.status_code, "text": r.text}))
"""


def test_with_nothing_but_loopback_it_starts_transcribes_and_stops(
    tmp_path: Path, data_dir: Path, record_property: Callable[[str, Any], None]
) -> None:
    with isolated() as ns:
        ns.sysctl("net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
        root = service_data_dir(tmp_path / "data", data_dir / "models")
        server = Server(ns, root)
        with captured(ns, tmp_path / "isolated.pcap", server) as dump:
            server.start()  # default allowlist: loopback
            spec = {
                "url": server.url, "wait_s": READY_S, "key": KEYS["alice"],
                "audio": str(clip("jfk.flac").path),
            }  # fmt: skip
            try:
                out = json.loads(ns.python(_ISOLATED_CLIENT, input=json.dumps(spec), timeout=600))
            except RuntimeError as exc:
                raise AssertionError(f"{exc}\nserver log:\n{server.log()[-5000:]}") from None
            assert out["status"] == 200, out
            assert JFK in _words(json.loads(out["text"])["text"]), out
            time.sleep(IDLE_S)
            assert server.stop() == 0, server.log()[-5000:]
            frames = dump.stop()
    traffic = only_the_clients_connections(frames, "127.0.0.1", server, record_property)
    assert traffic.totals()["data_bytes_to_server"] > clip("jfk.flac").path.stat().st_size


def _trap(address: str) -> socket.socket:
    """A listener where the proxies point: a connection that reached it waits in its backlog."""
    trap = socket.socket()
    trap.bind((address, 0))
    trap.listen(16)
    trap.setblocking(False)
    return trap


NO_MODEL = ({400, 404}, {"model_not_found", "invalid_model"})
NOT_MEDIA = ({400}, {"unsupported_media"})
Answer = tuple[set[int], set[str]]
"""The statuses and error codes a request may get."""


def _careless_requests(proxy: str, rtp: str) -> list[tuple[str, str, dict[str, Any], Answer]]:
    """Requests that would reach out from a careless server, and the answer each must get:
    ``(method, path, httpx arguments, (statuses, error codes))``. A job may also be accepted
    (202) and then fail with one of the codes."""
    out: list[tuple[str, str, dict[str, Any], Answer]] = []
    # faster-whisper downloads a size name ("tiny") or a repository id from the Hugging Face hub.
    for model, answer in (
        ("large-v3", NO_MODEL), ("tiny", NO_MODEL), ("distil-large-v3", NO_MODEL),
        ("Systran/faster-whisper-tiny", NO_MODEL),
        (f"{proxy}/Systran/faster-whisper-tiny", NO_MODEL), ("../../../../tmp", NO_MODEL),
    ):  # fmt: skip
        for route in ("/v1/audio/transcriptions", "/v1/audio/translations", "/v1/jobs"):
            args = {"files": _upload("LDC93S1.wav"), "data": {"model": model}}
            out.append(("POST", route, args, answer))
    out.append(("GET", "/v1/models/large-v3", {}, NO_MODEL))
    # Media that name a URL: FFmpeg would fetch an HLS playlist's segments, and open the RTP
    # sockets an SDP file describes.
    host, port = rtp.rsplit(":", 1)
    for name, body in (
        ("talk.m3u8", f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{proxy}/a.ts\n"
                      "#EXT-X-ENDLIST\n"),
        ("talk.sdp", f"v=0\no=- 0 0 IN IP4 {host}\ns=talk\nc=IN IP4 {host}\nt=0 0\n"
                     f"m=audio {port} RTP/AVP 0\n"),
    ):  # fmt: skip
        for route in ("/v1/audio/transcriptions", "/v1/jobs"):
            args = {"files": {"file": (name, body.encode(), "application/octet-stream")}}
            out.append(("POST", route, args, NOT_MEDIA))
    return out


def test_requests_that_a_careless_server_would_send_out_stay_inside(
    tmp_path: Path, data_dir: Path, record_property: Callable[[str, Any], None]
) -> None:
    with Lab() as lab:
        ns = lab.add()
        ns.disable_ipv6()
        ns.sink_default_route()
        root = service_data_dir(tmp_path / "data", data_dir / "models")
        server = Server(ns, root)
        with _trap(ns.gateway) as trap, captured(ns, tmp_path / "careless.pcap", server) as dump:
            trap_at = f"{ns.gateway}:{trap.getsockname()[1]}"
            proxy = f"http://{trap_at}"
            proxies = {v.upper(): proxy for v in PROXY_VARIABLES if v != "no_proxy"}
            proxies |= {k.lower(): v for k, v in proxies.items()}
            # Where huggingface_hub would download from, and its "offline" switch turned off;
            # where FastAPI would export OpenTelemetry data, were an exporter installed.
            env = _clean_env(
                **proxies, HF_ENDPOINT=proxy, HF_HUB_OFFLINE="0",
                FASTAPI_OTEL_AUTO_CONFIGURE="true", OTEL_EXPORTER_OTLP_ENDPOINT=proxy,
            )  # fmt: skip
            server.start(allow=[f"{ns.gateway}/32"], env=env)
            key = {"Authorization": f"Bearer {KEYS['alice']}"}
            wrong = []
            with httpx.Client(base_url=server.url, timeout=300, trust_env=False) as api:
                server.wait_ready(api)
                for method, path, args, (statuses, codes) in _careless_requests(proxy, trap_at):
                    r = api.request(method, path, headers=key, **args)
                    if path == "/v1/jobs" and r.status_code == 202:
                        r = _ended(api, r.json()["id"], key)
                    got = (r.status_code, (r.json().get("error") or {}).get("code"))
                    if got[0] not in statuses or got[1] not in codes:
                        what = args.get("data") or args["files"]["file"][0]
                        wrong.append(f"{method} {path} {what}: {got}, not {statuses} {codes}")
                # And a model that is installed still loads and transcribes, proxies or not.
                r = api.post("/v1/audio/transcriptions", headers=key, files=_upload("jfk.flac"),
                             data={"model": "tiny.en"})  # fmt: skip
                assert r.status_code == 200, r.text
                assert JFK in _words(r.json()["text"]), r.text
            time.sleep(IDLE_S)
            assert server.stop() == 0, server.log()[-5000:]
            frames = dump.stop()
            with pytest.raises(BlockingIOError):
                trap.accept()  # nothing connected to the proxy address
    assert not wrong, "\n".join(wrong)
    only_the_clients_connections(frames, ns.gateway, server, record_property)


_CARELESS = """
import json, socket, sys
spec = json.load(sys.stdin)
def connect(host, port):
    with socket.socket() as s:
        s.settimeout(1)
        try:
            s.connect((host, port))
        except OSError:
            pass
connect(spec["far"], 443)  # beyond every link: into the sink
connect(spec["client"], spec["closed"])  # the client's machine, another port
connect("127.0.0.1", spec["closed"])  # loopback
try:
    socket.getaddrinfo("huggingface.co", 443)  # resolv.conf: the namespace's own address
except OSError:
    pass
"""


def test_the_capture_sees_what_a_careless_process_would_send(tmp_path: Path) -> None:
    """The control: the same namespace, capture and analysis see a connection to a far address,
    to the client's machine, on loopback, and a name lookup — so their absence above means
    something."""
    with Lab() as lab:
        ns = lab.add()
        ns.disable_ipv6()
        ns.sink_default_route()
        far = str(lab.net(250)[1])  # in this lab's own block, on no link: only the sink leads there
        dump = Tcpdump(ns, tmp_path / "control.pcap")
        dump.start()
        try:
            closed = free_port()
            spec = {"far": far, "client": ns.gateway, "closed": closed}
            ns.python(_CARELESS, input=json.dumps(spec), timeout=60)
            frames = dump.stop()
        finally:
            dump.kill()
    traffic = pcap.client_traffic(frames, ns.gateway, ns.address, port=0)  # no server: all foreign
    seen = "\n".join(traffic.foreign)
    for expected in (
        rf"TCP {ns.address}:\d+ > {far}:443 \[S\] \(if \d+, out",  # and no answer
        rf"TCP {ns.address}:\d+ > {ns.gateway}:{closed} \[S\]",
        rf"TCP {ns.gateway}:{closed} > {ns.address}:\d+ \[\.?R",  # the client's kernel: closed
        rf"TCP 127\.0\.0\.1:\d+ > 127\.0\.0\.1:{closed} \[S\]",
        rf"UDP {ns.address}:\d+ > {ns.address}:53 .* query 'huggingface\.co'",
    ):
        assert re.search(expected, seen), f"{expected!r} not in:\n{traffic.foreign_summary()}"
    assert not traffic.connections
