"""A real ``hushscribe serve`` process on a free loopback port, for API tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

# Random-looking and long enough for the weak-key check (settings.api_key_weakness).
KEYS = {
    "alice": "sk-alice-" + "Ux4bQ9rT2mW7yZ1cV6nH3kJ8pL5dF0gS",
    "bob": "sk-bob-" + "Rk2nB7vX4qT9mC1zL6wP3hY8sD5gF0jN",
}
LOOPBACK_CLIENT = ("127.0.0.1", 50000)
"""The peer address in-process tests (TestClient) speak from: inside the default allowlist."""

ADMIN_PASSWORD = "correct horse battery staple 7Qx"
"""The first admin's password in every test server (``HUSHSCRIBE_ADMIN_PASSWORD``)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    data_dir: Path
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    """Where it listens and where clients reach it (tests of source addresses bind elsewhere)."""
    scheme: str = "http"
    verify: str | bool = True
    """What clients check the server's certificate against: the system's CAs, or a CA file (a
    self-signed certificate)."""
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    launcher: list[str] = field(default_factory=lambda: ["-m", "hushscribe"])
    python: str = sys.executable
    """The interpreter (benchmarks point it at another install to compare builds)."""
    """What runs ``serve``: the real CLI, or a test script that wraps it (see hang_serve.py)."""
    serve_args: list[str] = field(default_factory=list)
    """More ``serve`` options, after the ones every test server gets (e.g. ``--first-run-key``)."""

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def tls_verify(self) -> ssl.SSLContext | bool:
        """``verify`` as httpx takes it (it deprecates a path)."""
        if isinstance(self.verify, str):
            return ssl.create_default_context(cafile=self.verify)
        return self.verify

    def client(self, owner: str = "alice", **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {KEYS[owner]}"} if owner else {}
        kw.setdefault("timeout", 120)
        kw.setdefault("verify", self.tls_verify())
        return httpx.Client(base_url=self.url, headers=headers, **kw)

    def admin(self, **kw: Any) -> httpx.Client:
        """A client signed in as the first admin (a browser session: cookie + CSRF header)."""
        return self.signed_in("admin", ADMIN_PASSWORD, **kw)

    def signed_in(self, username: str, password: str, **kw: Any) -> httpx.Client:
        """A client with the session cookie and CSRF header of a fresh sign-in (not yet opened:
        use it in a ``with``)."""
        kw.setdefault("timeout", 120)
        kw.setdefault("verify", self.tls_verify())
        with httpx.Client(base_url=self.url, **kw) as login:
            r = login.post("/v1/auth/login", json={"username": username, "password": password})
            r.raise_for_status()
            cookies = login.cookies
        headers = {"X-CSRF-Token": r.json()["csrf_token"]}
        return httpx.Client(base_url=self.url, cookies=cookies, headers=headers, **kw)

    def start(self, wait_ready: bool = True, timeout: float = 90) -> Service:
        self.log_path = self.data_dir / f"serve-{self.port}-{int(time.time() * 1000)}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUSHSCRIBE_")}
        env.update(
            {
                "HUSHSCRIBE_DATA_DIR": str(self.data_dir),
                "HUSHSCRIBE_AUTH__API_KEYS": json.dumps(KEYS),
                "HUSHSCRIBE_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "HUSHSCRIBE_JOBS__LEASE_S": "3",
                "HUSHSCRIBE_JOBS__POLL_INTERVAL_S": "0.05",
                "HUSHSCRIBE_ENGINE__CPU_THREADS": "2",
                "HUSHSCRIBE_JOBS__WORKERS": "1",  # tests that kill "the" worker need one
                **self.env,
            }
        )
        with self.log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [self.python, *self.launcher, "serve", "--host", self.host,
                 "--port", str(self.port), "--log-level", "warning", *self.serve_args],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                r = httpx.get(
                    self.url + ("/readyz" if wait_ready else "/healthz"),
                    timeout=2,
                    verify=self.tls_verify(),
                )
                if r.status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"serve not ready in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path else ""

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        children = psutil.Process(self.proc.pid).children(recursive=True)
        return [c.pid for c in children if "spawn_main" in " ".join(c.cmdline())]

    def kill9(self) -> None:
        """SIGKILL the server and its whole process group of workers, as a power cut would."""
        assert self.proc is not None
        pids = [self.proc.pid, *self.worker_pids()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        psutil.wait_procs([p for p in map(_proc, pids) if p], timeout=10)

    def stop(self, timeout: float = 60) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        pids = self.worker_pids()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            code = -9
        psutil.wait_procs([p for p in map(_proc, pids) if p], timeout=10)
        return code


def _proc(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def service_data_dir(root: Path, models_dir: Path | None) -> Path:
    """A fresh data dir; the demo models are linked in, not copied."""
    root.mkdir(parents=True, exist_ok=True)
    if models_dir is not None:
        (root / "models").symlink_to(models_dir, target_is_directory=True)
    return root
