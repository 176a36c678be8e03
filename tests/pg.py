"""A throwaway PostgreSQL server for tests: the Debian package's binaries, a cluster of its own.

``pg_server`` (one per test session) runs ``initdb`` into a fresh directory under
``/tmp/hushscribe-pg-<uid>/`` and starts it with ``pg_ctl``: on 127.0.0.1 and a free port, its unix
socket in that directory, ``fsync=off`` (nothing here must survive a power cut). PostgreSQL
refuses to run as root, so as root the cluster belongs to the package's ``postgres`` user and every
server command runs through ``runuser``; as any other user it is that user's. Clients sign in with
a password made for the session (scram-sha-256), as a role that owns its databases and is not a
superuser, the way a deployment's would. ``pg_url`` gives each test module a database of its own.

The server is stopped (``pg_ctl stop -m fast``, by its PID if that fails) and its directory
removed when the session ends, failed or not; the cluster of a run that was killed (its creator's
PID is gone) is stopped and removed by the next run, as ``netns.py`` does for namespaces.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

SYSTEM_USER = "postgres"
"""Who owns and runs the cluster when the tests run as root (the Debian package creates it)."""
ADMIN = "pgadmin"
"""The cluster's superuser: makes and drops databases."""
ROLE = "hushscribe"
"""The role the code under test signs in as: owns its databases, nothing more."""
PARENT = Path(tempfile.gettempdir()) / f"hushscribe-pg-{os.getuid()}"
_CLUSTER = re.compile(r"^(\d+)-(\d+)-[0-9a-f]+$")
"""A cluster's directory: ``<creator's PID>-<its start time, 1/100 s>-<random>``, so that the
name alone tells whether its creator still runs, from the moment it exists."""
_BIND_FAILED = ("could not bind", "Address already in use", "could not create any TCP/IP sockets")
_names = itertools.count()


def find_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` (where Debian puts initdb and pg_ctl),
    else the directory of a ``pg_ctl`` on PATH."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in p.parent.parent.name.split(".")],
    )
    if found:
        return found[-1].parent
    on_path = shutil.which("pg_ctl")
    if on_path and (Path(on_path).resolve().parent / "initdb").exists():
        return Path(on_path).resolve().parent
    pytest.fail(
        "PostgreSQL's server binaries (initdb, pg_ctl) are missing: run "
        "scripts/install-system-deps.sh (as root; it installs Debian's postgresql)"
    )


def _as_owner() -> list[str]:
    """The command prefix that runs a server command as the cluster's owner."""
    if os.geteuid() != 0:
        return []
    try:
        import pwd

        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        pytest.fail(
            f"PostgreSQL refuses to run as root and there is no {SYSTEM_USER!r} user: run "
            "scripts/install-system-deps.sh (Debian's postgresql package creates it)"
        )
    return ["runuser", "-u", SYSTEM_USER, "--"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    """One running cluster; :meth:`create_database` gives URLs for the code under test."""

    root: Path
    bindir: Path
    port: int = 0
    password: str = field(default_factory=lambda: secrets.token_hex(16))
    version: str = ""

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str, user: str = ROLE) -> str:
        """A SQLAlchemy URL (psycopg 3) for ``database`` over TCP on loopback."""
        return f"postgresql+psycopg://{user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def conninfo(self, database: str = "postgres", user: str = ADMIN) -> str:
        """A libpq connection string, for psycopg without SQLAlchemy."""
        return (
            f"host=127.0.0.1 port={self.port} dbname={database} user={user} "
            f"password={self.password} connect_timeout=10"
        )

    def admin_sql(self, *statements: str) -> None:
        """Run statements as the superuser, outside a transaction (CREATE DATABASE needs it)."""
        import psycopg

        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement.encode())

    def create_database(self, hint: str = "db") -> str:
        """A new empty database owned by the test role; returns its URL."""
        name = f"{re.sub(r'[^a-z0-9]+', '_', hint.lower())[-40:]}_{next(_names)}"
        self.admin_sql(f'CREATE DATABASE "{name}" OWNER "{ROLE}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database of ``url``, ending its connections first."""
        name = url.rsplit("/", 1)[1]
        self.admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*_as_owner(), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,  # the owner may not be allowed to look at the caller's directory
            env={**os.environ, "LC_ALL": "C.UTF-8", "TZ": "UTC"},
        )

    def init(self) -> None:
        """``initdb`` the cluster, a superuser and the test role signing in with the password."""
        self.root.mkdir(mode=0o700)
        self.socket_dir.mkdir(mode=0o700)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if _as_owner():
            shutil.chown(self.root, SYSTEM_USER, SYSTEM_USER)
            shutil.chown(self.socket_dir, SYSTEM_USER, SYSTEM_USER)
            shutil.chown(pwfile, SYSTEM_USER, SYSTEM_USER)
        done = self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", ADMIN,
            f"--pwfile={pwfile}", "--auth=scram-sha-256", "--encoding=UTF8",
            "--locale=C.UTF-8", "--no-instructions", "--no-sync",
        )  # fmt: skip
        pwfile.unlink()
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        self.version = (self.data / "PG_VERSION").read_text().strip()

    def start(self, tries: int = 3, listen: tuple[str, ...] = ("127.0.0.1",)) -> None:
        """Start on a free port (another one if something took it meanwhile), then make the
        test role. ``listen``: addresses to listen on (a test's own namespaces' gateways); each
        non-loopback one's /16 may sign in with the password."""
        self._allow_networks(listen)
        for attempt in range(tries):
            self.port = _free_port()
            options = " ".join(
                [
                    f"-c listen_addresses={','.join(listen)}",
                    f"-c port={self.port}",
                    f"-c unix_socket_directories={self.socket_dir}",
                    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
                    "-c max_connections=200",  # servers, workers and their pools in e2e tests
                ]
            )
            done = self._run(
                str(self.bindir / "pg_ctl"), "start", "-D", str(self.data), "-w", "-t", "60",
                "-l", str(self.log_path), "-o", options,
            )  # fmt: skip
            if done.returncode == 0:
                break
            log = self.log_text()
            if attempt + 1 == tries or not any(why in log for why in _BIND_FAILED):
                raise RuntimeError(f"pg_ctl start failed:\n{done.stdout}{done.stderr}\n{log}")
        self.admin_sql(f"CREATE ROLE \"{ROLE}\" LOGIN PASSWORD '{self.password}'")

    def _allow_networks(self, listen: tuple[str, ...]) -> None:
        extra = [a for a in listen if not a.startswith("127.")]
        if not extra:
            return
        hba = self.data / "pg_hba.conf"
        lines = [f"host all all {ipaddress.ip_network(a + '/16', strict=False)} scram-sha-256"
                 for a in extra]  # fmt: skip
        hba.write_text(hba.read_text() + "\n".join(lines) + "\n")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server (fast: connections are cut) and remove its directory."""
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(
                    str(self.bindir / "pg_ctl"), "stop", "-D", str(self.data), "-m", "fast",
                    "-w", "-t", "30",
                )  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            pass
        finally:
            _kill_postmaster(self.data)  # still running (stop failed): by its PID
            shutil.rmtree(self.root, ignore_errors=True)


def _postmaster(data: Path) -> psutil.Process | None:
    """The running postmaster of the cluster in ``data``, if any."""
    try:
        pid = int((data / "postmaster.pid").read_text().split("\n", 1)[0])
        proc = psutil.Process(pid)
        if proc.name() in ("postgres", "postmaster"):
            return proc
    except (OSError, ValueError, psutil.Error):
        pass
    return None


def _kill_postmaster(data: Path) -> None:
    proc = _postmaster(data)
    if proc is None:
        return
    with contextlib.suppress(psutil.Error):
        proc.send_signal(signal.SIGQUIT)  # immediate shutdown: its children go with it
        try:
            proc.wait(timeout=15)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def _started(pid: int) -> int:
    return round(psutil.Process(pid).create_time() * 100)


def _creator_alive(name: str) -> bool:
    found = _CLUSTER.match(name)
    assert found is not None
    try:
        return _started(int(found.group(1))) == int(found.group(2))
    except psutil.Error:
        return False


def remove_stale() -> None:
    """Stop and remove the clusters of test runs that no longer exist (killed before their
    teardown), so that neither servers nor their files pile up."""
    if not PARENT.is_dir():
        return
    for root in PARENT.iterdir():
        if _CLUSTER.match(root.name) and not _creator_alive(root.name):
            _kill_postmaster(root / "data")
            shutil.rmtree(root, ignore_errors=True)


def start_server(listen: tuple[str, ...] = ("127.0.0.1",)) -> PgServer:
    """A new running cluster (the caller stops it)."""
    bindir = find_bindir()
    remove_stale()
    PARENT.mkdir(mode=0o755, exist_ok=True)
    PARENT.chmod(0o755)  # the cluster's owner must reach its directory
    name = f"{os.getpid()}-{_started(os.getpid())}-{secrets.token_hex(4)}"
    server = PgServer(PARENT / name, bindir)
    try:
        server.init()
        server.start(listen=listen)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL server for this test session, stopped and removed at its end."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.fail("psycopg is missing: install hushscribe[postgres] (make install-dev does)")
    server = start_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def pg_url(pg_server: PgServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database for this test module: its ``postgresql+psycopg://`` URL."""
    url = pg_server.create_database(request.module.__name__.rsplit(".", 1)[-1])
    yield url
    pg_server.drop_database(url)
