"""The egress guard: a hushscribe process reaches nothing but loopback and the hosts its settings
name (LDAP, syslog, the database, ``network.egress_allow``).

A Python audit hook (PEP 578) sees every ``socket.connect``, ``sendto``, ``sendmsg`` and name
lookup that Python code makes — the standard library, ldap3, httpx, huggingface_hub alike — before
it happens, and refuses the ones the policy does not allow with :class:`EgressBlocked` (a
``PermissionError``, so callers that handle connection errors handle it). A refused lookup
never reaches a resolver, a refused connect never leaves a SYN. Each refusal is
logged, counted and handed to the reporters (the audit log's ``egress_blocked``).

What it cannot see: connections made inside C libraries without Python's socket module (libpq
for PostgreSQL, a CUDA driver). Those go only where the settings point them; the systemd unit's
``IPAddressDeny=any`` and the firewall rules from ``hushscribe deploy firewall`` stop the rest in
the kernel. Audit hooks cannot be removed, so the guard is installed only by the ``hushscribe``
command and the worker processes, never on import.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from hushscribe import _SET_ASIDE_PROXY_ENV

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Reporter = Callable[[str, int | None, str], None]
"""Called with (host, port, caller) for each refused attempt."""

LOOPBACK_NETWORKS: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
    ipaddress.ip_network("::ffff:127.0.0.0/104"),
)
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_LOOKUPS = frozenset({"socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex"})
_REVERSE = frozenset({"socket.gethostbyaddr", "socket.getnameinfo"})
_SENDS = frozenset({"socket.connect", "socket.sendto", "socket.sendmsg"})
_INTERNAL_MODULES = ("socket", "ssl", "asyncio", "selectors", "hushscribe.security.egress")

RESOLVE_EVERY_S = 30.0
log = logging.getLogger("hushscribe.egress")


class EgressBlocked(PermissionError):
    """An outgoing connection or name lookup that the egress policy does not allow."""


@dataclass
class EgressPolicy:
    """Where this process may connect: networks, and host names it may look up (their answers
    become allowed addresses, so a configured LDAP server's current address works)."""

    networks: tuple[IPNetwork, ...] = LOOPBACK_NETWORKS
    hosts: frozenset[str] = LOOPBACK_NAMES
    resolved: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = field(default_factory=set)
    anything: bool = False  # network.egress_guard = false after the guard was already on

    def allows_address(self, address: str) -> bool:
        if self.anything:
            return True
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])  # fe80::1%eth0
        except ValueError:
            return False
        if ip in self.resolved:
            return True
        return any(ip in net for net in self.networks if net.version == ip.version)

    def allows_lookup(self, host: str | bytes | None) -> bool:
        """A lookup of ``host``: passive (None) and numeric ones never ask a resolver."""
        if host is None or self.anything:
            return True
        name = (host.decode("ascii", "replace") if isinstance(host, bytes) else host).lower()
        name = name.rstrip(".")
        if not name or _is_ip_literal(name):
            return True
        return name in self.hosts

    def describe(self) -> list[str]:
        return [str(n) for n in self.networks] + sorted(self.hosts - LOOPBACK_NAMES)


def _is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _host_of_url(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def policy_for(settings: Any) -> EgressPolicy:
    """The policy that ``settings`` (a :class:`hushscribe.settings.Settings`) imply: loopback,
    the LDAP server, the syslog collector, the database host and ``network.egress_allow``."""
    networks: list[IPNetwork] = list(LOOPBACK_NETWORKS)
    hosts: set[str] = set(LOOPBACK_NAMES)

    def add(entry: str | None) -> None:
        if not entry:
            return
        entry = entry.strip().lower().rstrip(".")
        try:
            net = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            hosts.add(entry)
            return
        covered = any(
            net.version == n.version and net.subnet_of(n)  # type: ignore[arg-type]
            for n in networks
        )
        if not covered:
            networks.append(net)

    add(settings.server.host)  # binding to a name looks it up
    ldap = getattr(settings.auth, "ldap", None)
    add(_host_of_url(ldap.url) if ldap is not None else None)
    syslog = getattr(settings.audit, "syslog", None)
    add(syslog.host if syslog is not None else None)
    database_url = settings.database_url
    add(_host_of_url(database_url) if database_url and "://" in database_url else None)
    for entry in settings.network.egress_allow:
        add(entry)
    return EgressPolicy(tuple(networks), frozenset(hosts))


@dataclass
class _Guard:
    policy: EgressPolicy
    reporters: list[Reporter] = field(default_factory=list)
    blocked: int = 0
    resolved_at: float = -RESOLVE_EVERY_S
    local: threading.local = field(default_factory=threading.local)

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not event.startswith("socket."):
            return
        if event in _SENDS:
            address = args[1] if len(args) > 1 else None
            if not isinstance(address, tuple) or not address:
                return  # AF_UNIX paths, connected sockets' sendmsg (None)
            host, port = str(address[0]), address[1] if len(address) > 1 else None
            if _is_ip_literal(host):
                allowed = self.policy.allows_address(host) or self.resolves_to(host)
            else:  # connect(("name", port)) resolves inside: judged as the lookup it makes
                allowed = self.policy.allows_lookup(host)
            if not allowed:
                self.refuse(event, host, port)
        elif event in _LOOKUPS:
            name = args[0] if args else None
            if not self.policy.allows_lookup(name):
                port = args[1] if event == "socket.getaddrinfo" and len(args) > 1 else None
                self.refuse(event, str(name), port if isinstance(port, int) else None)
        elif event in _REVERSE:
            target = args[0] if args else None
            host = str(target[0] if isinstance(target, tuple) and target else target)
            if not self.policy.allows_address(host):
                self.refuse(event, host, None)

    def resolves_to(self, address: str) -> bool:
        """Whether a configured host name resolves to ``address`` (so a directory server that
        moved is still reached). Looked up only on the way to a refusal, at most every
        ``RESOLVE_EVERY_S``, and only the names the settings allow (glibc's resolver runs in C,
        outside this hook): a refusal may cost a lookup of an allowed name, never anything else."""
        if getattr(self.local, "resolving", False) or not (self.policy.hosts - LOOPBACK_NAMES):
            return False
        now = time.monotonic()
        if now - self.resolved_at < RESOLVE_EVERY_S:
            return False
        self.resolved_at = now
        self.local.resolving = True
        try:
            import socket

            for name in self.policy.hosts - LOOPBACK_NAMES:
                try:
                    infos = socket.getaddrinfo(name, None)
                except OSError:
                    continue
                found = {ipaddress.ip_address(str(i[4][0]).split("%", 1)[0]) for i in infos}
                self.policy.resolved |= found
            return self.policy.allows_address(address)
        finally:
            self.local.resolving = False

    def refuse(self, event: str, host: str, port: int | None) -> None:
        self.blocked += 1
        caller = _caller()
        if not getattr(self.local, "reporting", False):  # a reporter's own socket use: no loop
            self.local.reporting = True
            try:
                log.warning(
                    "egress blocked: %s to %s%s from %s (not loopback, not a configured host; "
                    "allow it with network.egress_allow)",
                    event, host, f":{port}" if port is not None else "", caller,
                )  # fmt: skip
                for report in list(self.reporters):
                    try:
                        report(host, port, caller)
                    except Exception:  # the refusal stands whether or not it was recorded
                        log.exception("egress_blocked could not be recorded")
            finally:
                self.local.reporting = False
        raise EgressBlocked(
            f"hushscribe egress guard: outgoing {event.removeprefix('socket.')} to {host}"
            f"{f':{port}' if port is not None else ''} refused (allowed: loopback and "
            "the hosts in the settings; add it to network.egress_allow if it is meant)"
        )


def _caller() -> str:
    """The first frame outside the socket machinery: who tried to connect."""
    frame = sys._getframe(2)
    while frame is not None:
        module = str(frame.f_globals.get("__name__", "?"))
        if not module.startswith(_INTERNAL_MODULES):
            return f"{module}:{frame.f_code.co_name}:{frame.f_lineno}"
        frame = frame.f_back  # type: ignore[assignment]
    return "?"


_guard: _Guard | None = None
_lock = threading.Lock()


def install(policy: EgressPolicy) -> None:
    """Turn the guard on for this process (for good: audit hooks cannot be removed), or replace
    its policy when it is already on."""
    global _guard
    with _lock:
        if _guard is None:
            _guard = _Guard(policy)
            sys.addaudithook(_guard.hook)
        else:
            _guard.policy = policy


def apply(settings: Any) -> bool:
    """At the start of a ``hushscribe`` process: the guard on with the policy of ``settings``
    (unless ``network.egress_guard`` is off), proxy variables back only if configured.
    Returns whether the guard is on."""
    if settings.network.use_proxy_env:
        for name, value in _SET_ASIDE_PROXY_ENV.items():
            os.environ.setdefault(name, value)
    if not settings.network.egress_guard:
        if _guard is not None:  # turned on before the settings were read: let anything by
            _guard.policy = EgressPolicy(anything=True)
        log.warning("egress guard off (network.egress_guard = false)")
        return False
    install(policy_for(settings))
    return True


def configure(settings: Any) -> None:
    """Settings read by a command: the guard, where this process turned it on (the ``hushscribe``
    command does, before anything else), takes their policy. In-process callers (tests, an
    embedding application) are left as they are."""
    if _guard is not None:
        apply(settings)


def reporter_for(log: Any) -> Reporter:
    """A reporter that writes ``egress_blocked`` to an audit log (an ``AuditLog``)."""
    from hushscribe.audit.events import SERVICE, event

    def report(host: str, port: int | None, caller: str) -> None:
        target = f"{host}:{port}" if port is not None else host
        details = {"host": host, "port": port, "caller": caller}
        log.append(event("egress_blocked", SERVICE, target=target, outcome="denied",
                         details={k: v for k, v in details.items() if v is not None}))  # fmt: skip

    return report


def report_to(reporter: Reporter) -> None:
    """Hand every refusal to ``reporter`` too (no effect until the guard is on)."""
    with _lock:
        if _guard is not None:
            _guard.reporters.append(reporter)


def active() -> EgressPolicy | None:
    """The policy in force in this process, or None when the guard is off."""
    return _guard.policy if _guard is not None else None


def blocked_count() -> int:
    return _guard.blocked if _guard is not None else 0


def set_aside_proxy_env() -> dict[str, str]:
    """The proxy variables removed at import (for a child that must reach an index: pip)."""
    return dict(_SET_ASIDE_PROXY_ENV)
