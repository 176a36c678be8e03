"""Hosts with real source addresses for tests: Linux network namespaces joined to this one by veths.

A :class:`Lab` takes a free ``10.X.0.0/16`` (one no interface or route of this machine uses, held
with a lock file so that two test runs never pick the same one) and gives each namespace its own
``/24``: the namespace is ``10.X.n.2``, this (root) namespace is ``10.X.n.1`` on the other end of
the veth. A server bound to ``0.0.0.0`` here is reached from namespace ``n`` at ``10.X.n.1`` and
sees the client as ``10.X.n.2``. Namespaces have no default route, so nothing they send can leave
the machine, and their ``resolv.conf`` names their own address, so a stray DNS lookup stays here.

Everything is removed by :meth:`Lab.close` (the fixture's ``finally``), and namespaces left by a
run that was killed (their creator's PID is gone) are removed by the next lab. Needs root.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

PREFIX = "hsnet"
"""Namespace names are ``hsnet-<pid>-<n>``: unique per test process, and the PID tells a later
run whether their creator is still alive."""
_STALE = re.compile(rf"^{PREFIX}-(\d+)-(\d+)$")
LOCK_DIR = Path("/run/lock") if Path("/run/lock").is_dir() else Path("/tmp")
SECOND_OCTETS = range(200, 250)
"""Where a lab's ``10.X.0.0/16`` is chosen."""
REPO = Path(__file__).resolve().parent.parent

_REQUESTS = """
import json, sys
import httpx
out = []
with httpx.Client(timeout=30, trust_env=False) as client:
    for r in json.load(sys.stdin):
        resp = client.request(r["method"], r["url"], headers=r.get("headers") or {},
                              content=r.get("content", "").encode("latin-1") or None)
        out.append({"status": resp.status_code, "headers": dict(resp.headers), "text": resp.text})
print(json.dumps(out))
"""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=30)


@dataclass
class Namespace:
    """One namespace: a host at ``address`` that reaches this machine at ``gateway``."""

    name: str
    address: str
    gateway: str
    root_link: str

    def run(
        self, args: list[str], *, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """``args`` run inside the namespace (``ip netns exec``), from the repository root."""
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO), "NO_PROXY": "*"},
        )

    def python(self, code: str, *, input: str | None = None, timeout: float = 60) -> str:
        """Run ``code`` with this interpreter inside the namespace; its stdout (fails on error)."""
        done = self.run([sys.executable, "-c", code], input=input, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"in {self.name}: exit {done.returncode}\n{done.stderr[-3000:]}")
        return done.stdout

    def popen(self, args: list[str], **kw: Any) -> subprocess.Popen[str]:
        """A long-running process inside the namespace (a server, tcpdump); the caller ends it.
        Keyword arguments go to :class:`subprocess.Popen` (``env`` replaces the default one)."""
        env = kw.pop("env", {**os.environ, "PYTHONPATH": str(REPO), "NO_PROXY": "*"})
        kw.setdefault("cwd", REPO)
        kw.setdefault("text", True)
        return subprocess.Popen(["ip", "netns", "exec", self.name, *args], env=env, **kw)

    def requests(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """HTTP requests made from inside the namespace, one client (and one process) for all:
        each ``{"method", "url", "headers"?, "content"?}``; each answer is ``{"status", "headers",
        "text"}``."""
        out = self.python(_REQUESTS, input=json.dumps(requests))
        answers: list[dict[str, Any]] = json.loads(out)
        return answers

    def request(self, method: str, url: str, **kw: Any) -> dict[str, Any]:
        return self.requests([{"method": method, "url": url, **kw}])[0]

    def sysctl(self, *settings: str) -> None:
        """``sysctl -w`` inside the namespace (its own copy of ``net.*``); fails on error."""
        done = self.run(["sysctl", "-q", "-w", *settings])
        if done.returncode != 0:
            raise RuntimeError(f"sysctl in {self.name}: {done.stderr.strip()}")

    def disable_ipv6(self) -> None:
        """No IPv6 in the namespace, nor on this machine's end of its veth: the kernels' router
        solicitations, MLD reports and neighbour discovery stop, and a capture on the link holds
        only what processes send (and ARP)."""
        self.sysctl("net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
        if self.root_link:
            subprocess.run(
                ["sysctl", "-q", "-w", f"net.ipv6.conf.{self.root_link}.disable_ipv6=1"],
                check=True, capture_output=True, timeout=30,
            )  # fmt: skip
        left = _ip("-n", self.name, "-6", "-o", "addr").stdout.strip()
        if left:
            raise RuntimeError(f"IPv6 addresses left in {self.name}: {left}")

    def sink_default_route(self) -> None:
        """Route every address that is not on the namespace's own links into a sink: a veth whose
        other end is also in the namespace, with no address, ARP off and forwarding off.

        Without a default route a connect to the outside fails before any packet exists (network
        unreachable), so a capture would prove nothing about it. With this one, a packet for any
        address is really sent, so a capture in the namespace (``-i any``) sees it, and then it is
        dropped at the other end (addressed to another host's MAC, nowhere to forward): it never
        leaves the namespace."""
        out, peer = "hssink", "hssinkpeer"  # names are per namespace
        _ip("-n", self.name, "link", "add", out, "type", "veth", "peer", "name", peer)
        for link in (out, peer):
            _ip("-n", self.name, "link", "set", link, "arp", "off", "up")
        _ip("-n", self.name, "route", "add", "default", "dev", out)
        self.sysctl("net.ipv4.ip_forward=0")


@dataclass
class Lab:
    """Namespaces in one free ``10.X.0.0/16``; a context manager that removes them all."""

    namespaces: list[Namespace] = field(default_factory=list)
    octet: int = 0
    _lock: TextIO | None = None

    def __enter__(self) -> Lab:
        if os.geteuid() != 0:
            raise RuntimeError("network namespaces need root")
        remove_stale()
        self.octet, self._lock = _reserve_block()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def net(self, n: int) -> ipaddress.IPv4Network:
        """The ``/24`` of namespace ``n`` (whether or not it exists yet)."""
        return ipaddress.IPv4Network(f"10.{self.octet}.{n}.0/24")

    def add(self) -> Namespace:
        n = len(self.namespaces) + 1
        name = f"{PREFIX}-{os.getpid()}-{n}"
        root_link, inner_link = f"hs{os.getpid()}r{n}", f"hs{os.getpid()}n{n}"  # <= 15 chars
        net = self.net(n)
        gateway, address = str(net[1]), str(net[2])
        ns = Namespace(name, address, gateway, root_link)
        self.namespaces.append(ns)  # from here on close() removes whatever part of it exists
        _ip("netns", "add", name)
        _ip("link", "add", root_link, "type", "veth", "peer", "name", inner_link)
        _ip("link", "set", inner_link, "netns", name)
        _ip("addr", "add", f"{gateway}/24", "dev", root_link)
        _ip("link", "set", root_link, "up")
        _ip("-n", name, "addr", "add", f"{address}/24", "dev", inner_link)
        _ip("-n", name, "link", "set", inner_link, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        etc = Path("/etc/netns") / name
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text(f"nameserver {address}\n")
        return ns

    def close(self) -> None:
        for ns in reversed(self.namespaces):
            _remove(ns.name, ns.root_link)
        self.namespaces.clear()
        if self._lock is not None:
            self._lock.close()  # releases the flock; the file stays for the next run
            self._lock = None


@contextlib.contextmanager
def isolated() -> Iterator[Namespace]:
    """A namespace with nothing but loopback: no interface to any other host, no route at all,
    a ``resolv.conf`` naming 127.0.0.1 (where nothing answers). What an air-gapped host has, at
    its most extreme. ``address`` and ``gateway`` are 127.0.0.1 (servers inside bind there)."""
    if os.geteuid() != 0:
        raise RuntimeError("network namespaces need root")
    remove_stale()
    name = f"{PREFIX}-{os.getpid()}-{next(_isolated_ids)}"
    ns = Namespace(name, "127.0.0.1", "127.0.0.1", root_link="")
    try:
        _ip("netns", "add", name)
        _ip("-n", name, "link", "set", "lo", "up")
        etc = Path("/etc/netns") / name
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text("nameserver 127.0.0.1\n")
        yield ns
    finally:
        _remove(name, None)


_isolated_ids = itertools.count(100)  # Lab numbers its namespaces from 1; these never meet them


def _remove(name: str, root_link: str | None) -> None:
    """Delete a namespace (its end of the veth goes with it, and so the pair), the root end if it
    is still there, and its ``/etc/netns`` directory. Missing parts are not an error."""
    _ip("netns", "del", name, check=False)
    if root_link is not None:
        _ip("link", "del", root_link, check=False)
    shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)


def remove_stale() -> None:
    """Remove namespaces a killed test run left (named by this module, creator PID gone)."""
    names = _ip("netns", "list", check=False).stdout.split()
    for name in names:
        match = _STALE.match(name)
        if match and not _alive(int(match.group(1))):
            _remove(name, f"hs{match.group(1)}r{match.group(2)}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network on this machine's interfaces and in its routing table."""
    out = _ip("-4", "-o", "addr").stdout + _ip("-4", "route", "show", "table", "all").stdout
    nets = []
    for token in re.findall(r"\b(\d+\.\d+\.\d+\.\d+(?:/\d+)?)\b", out):
        with contextlib.suppress(ValueError):
            nets.append(ipaddress.IPv4Network(token, strict=False))
    return nets


def _reserve_block() -> tuple[int, TextIO]:
    """A second octet X whose ``10.X.0.0/16`` nothing uses, locked against other test runs."""
    used = _used_networks()
    for octet in SECOND_OCTETS:
        block = ipaddress.IPv4Network(f"10.{octet}.0.0/16")
        if any(block.overlaps(net) for net in used if net.prefixlen > 0):
            continue
        lock = (LOCK_DIR / f"hushscribe-netns-10.{octet}.lock").open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        return octet, lock
    raise RuntimeError(f"no free 10.X.0.0/16 for X in {SECOND_OCTETS}")
