"""Checks of the network side: who can reach the service (bind address against the allowlist),
what it can reach (the egress guard, the host's default route, proxy variables). Nothing here
opens a socket or asks a resolver: routes are read from /proc, the guard is probed in a child
process with audit events only."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from hushscribe import PROXY_VARIABLES
from hushscribe.doctor.base import Check, Finding, fold
from hushscribe.settings import Settings

PROBE_TIMEOUT_S = 30.0
"""The probe imports the settings and the guard, nothing heavy: a second is typical."""

ROUTE_FILES = (Path("/proc/net/route"), Path("/proc/net/ipv6_route"))
RTF_UP = 0x0001
RTF_REJECT = 0x0200  # "unreachable" routes the kernel lists, which lead nowhere


def bind_kind(host: str) -> str:
    """``loopback``, ``any`` (every address of the host), ``address`` or ``name`` (a host name,
    not resolved here)."""
    if host.lower().rstrip(".") in ("localhost", "localhost.localdomain"):
        return "loopback"
    try:
        ip = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return "any" if host in ("", "*") else "name"
    if ip.is_unspecified:
        return "any"
    return "loopback" if ip.is_loopback else "address"


def bind_address(settings: Settings) -> Check:
    """Whether the clients ``network.allow`` admits can reach the address the server binds."""
    host, allow = settings.server.host, settings.network.allow
    kind = bind_kind(host)
    shown = ", ".join(str(n) for n in allow) or "nothing"
    findings: list[Finding] = []
    if not allow:
        findings.append(
            Finding(
                "WARN",
                "network.allow is empty: every request gets 403",
                'list the client networks in network.allow, e.g. allow = ["10.20.0.0/16"]',
            )
        )
    open_to_all = [str(n) for n in allow if n.prefixlen == 0]
    if open_to_all:
        findings.append(
            Finding(
                "WARN",
                f"network.allow contains {' and '.join(open_to_all)}: every address may connect",
                'list only the client networks in network.allow, e.g. allow = ["10.20.0.0/16"]',
            )
        )
    remote = [str(n) for n in allow if not n.is_loopback]
    if kind != "loopback" and allow and not remote:
        findings.append(
            Finding(
                "WARN",
                f"binds {host} but network.allow is loopback only ({shown}): nobody else can "
                "connect (other hosts get 403)",
                'list the client networks in network.allow (e.g. allow = ["10.20.0.0/16"]), or '
                'bind loopback: server.host = "127.0.0.1"',
            )
        )
    if kind == "loopback" and remote and not settings.network.trusted_proxies:
        findings.append(
            Finding(
                "WARN",
                f"binds {host} (loopback) while network.allow lists {', '.join(remote)}: those "
                "clients cannot reach it",
                'set server.host to this host\'s address on that network (or "0.0.0.0"); behind '
                "a reverse proxy on this host, list it in network.trusted_proxies instead",
            )
        )
    via = (
        " through the proxies in network.trusted_proxies"
        if settings.network.trusted_proxies
        else ""
    )
    return fold(
        "bind address",
        findings,
        f"binds {host}:{settings.server.port} ({kind}); network.allow: {shown}{via}",
    )


def _probe_settings(settings: Settings) -> dict[str, Any]:
    """The settings for the probe, as JSON, without the secrets it has no use for."""
    data: dict[str, Any] = settings.model_dump(mode="json")
    data["auth"].pop("api_keys", None)
    if data["auth"].get("ldap"):
        data["auth"]["ldap"].pop("bind_password", None)
    return data


def egress_guard(settings: Settings) -> Check:
    """``network.egress_guard`` is on and, applied in a fresh process with these settings, really
    refuses a connection and a name lookup."""
    name = "egress guard"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUSHSCRIBE_")}  # all passed
    proc = subprocess.run(
        [sys.executable, "-m", "hushscribe.doctor.egress_probe"],
        input=json.dumps(_probe_settings(settings)),
        capture_output=True,
        text=True,
        timeout=PROBE_TIMEOUT_S,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return Check(name, "FAIL", f"the probe process failed (exit {proc.returncode}): {tail}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    policy = ", ".join(result["policy"])
    if not result["guard_on"]:
        return Check(
            name,
            "WARN",
            "off (network.egress_guard = false): any library in the process may connect "
            "anywhere the network lets it",
            "set network.egress_guard = true (the default) in the config file",
        )
    passed = [label for label, blocked in result["blocked"].items() if not blocked]
    if passed:
        return Check(
            name,
            "FAIL",
            f"on, but it let through: {', '.join(passed)} (allowed: {policy})",
            "remove catch-all entries (0.0.0.0/0, ::/0, public names) from network.egress_allow",
        )
    refused = " and ".join(result["blocked"])
    return Check(name, "OK", f"on; refused a {refused}; allowed: {policy}")


def _ipv4_defaults(text: str) -> list[str]:
    found = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        iface, dest, gateway, flags, mask = fields[0], fields[1], fields[2], fields[3], fields[7]
        if int(dest, 16) == 0 and int(mask, 16) == 0 and int(flags, 16) & RTF_UP:
            via = ipaddress.IPv4Address(int.from_bytes(bytes.fromhex(gateway), "little"))
            found.append(f"{iface} (gateway {via})")
    return found


def _ipv6_defaults(text: str) -> list[str]:
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 10:
            continue
        dest, prefix, next_hop, flags, iface = fields[0], fields[1], fields[4], fields[8], fields[9]
        up = int(flags, 16) & RTF_UP and not int(flags, 16) & RTF_REJECT
        if int(dest, 16) == 0 and int(prefix, 16) == 0 and up and iface != "lo":
            found.append(f"{iface} (gateway {ipaddress.IPv6Address(int(next_hop, 16))})")
    return found


def default_route(route_files: tuple[Path, Path] = ROUTE_FILES) -> Check:
    """Whether the host has a default route (read from /proc: nothing is sent or resolved)."""
    name = "default route"
    try:
        routes = _ipv4_defaults(route_files[0].read_text())
        if route_files[1].exists():  # absent when IPv6 is disabled
            routes += _ipv6_defaults(route_files[1].read_text())
    except OSError as exc:
        return Check(name, "WARN", f"could not read the routing table: {exc}", "")
    if not routes:
        return Check(name, "OK", "no default route: this host reaches only its own networks")
    return Check(
        name,
        "WARN",
        f"this host has a default route via {', '.join(routes)}: an air-gapped host should "
        "not; hushscribe makes no outbound connection either way",
        "remove it (`ip route del default`, `ip -6 route del default`, and in the network "
        "configuration), or drop outbound traffic in the firewall",
    )


def proxy_variables(settings: Settings) -> Check:
    """Proxy variables in the environment: removed at start unless ``network.use_proxy_env``."""
    from hushscribe.security.egress import set_aside_proxy_env

    names = {n for v in PROXY_VARIABLES for n in (v, v.upper()) if n in os.environ}
    names |= set(set_aside_proxy_env())  # hushscribe removed them at import
    if not names:
        return Check("proxy variables", "OK", "none set")
    listed = ", ".join(sorted(names))  # names only: a proxy URL may carry a password
    if settings.network.use_proxy_env:
        return Check(
            "proxy variables",
            "WARN",
            f"{listed} set and honoured (network.use_proxy_env = true): a library may send "
            "requests to the proxy",
            "set network.use_proxy_env = false, or unset them in the service's environment",
        )
    return Check(
        "proxy variables",
        "WARN",
        f"{listed} set in the environment (ignored: network.use_proxy_env is off)",
        f"unset them in the service's environment (`unset {' '.join(sorted(names))}`)",
    )
