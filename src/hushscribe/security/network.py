"""Which address a request comes from, and whether that address may use the service.

The socket's peer is the client unless the peer is one of ``network.trusted_proxies``; then the
client is read from ``X-Forwarded-For``, walking from the right (the entry the nearest proxy
appended) past further trusted proxies to the first address that is not one. Entries to the left
of that are the client's own claims and are never read, so a client cannot choose its address by
sending the header: only proxies we trust write the part we look at.

Garbage never widens access: a walk that meets an entry it cannot parse stops there and judges
the request by the last trusted hop it reached (a proxy's own address, which the allowlist must
name for such a request to pass), not by anything further left.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_HOPS = 64
"""Entries of ``X-Forwarded-For`` looked at, at most; past them the walk stops as at garbage. A
head is capped at 16 KiB anyway; this keeps a header of thousands of trusted hops from costing a
parse of each on every request."""


def parse_address(text: str) -> IPAddress | None:
    """``text`` as an address (``10.0.0.1``, ``::1``, ``10.0.0.1:443``, ``[::1]:443``), with an
    IPv4-mapped IPv6 address as the IPv4 address it carries and an IPv6 zone dropped; None for
    anything else. Ports are accepted because some proxies append them; they mean nothing here."""
    text = text.strip()
    if text.startswith("["):  # [v6] or [v6]:port
        end = text.find("]")
        if end < 0 or (text[end + 1 :] and not _is_port(text[end + 1 :])):
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # v4:port (a bare v6 address has at least two colons)
        text, port = text.split(":")
        if not _is_port(":" + port):
            return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    return normalise(ip)


def _is_port(text: str) -> bool:
    return len(text) > 1 and text[0] == ":" and text[1:].isdigit() and int(text[1:]) <= 65535


def normalise(ip: IPAddress) -> IPAddress:
    """The IPv4 address inside ``::ffff:a.b.c.d`` (a dual-stack socket's view of an IPv4 client),
    so IPv4 rules apply to it; an IPv6 address without its zone (``%eth0``), so that two spellings
    of one address are judged alike."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.scope_id is not None:
            return ipaddress.IPv6Address(int(ip))
    return ip


def is_allowed(ip: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    """Whether ``ip`` lies in one of ``networks`` (never in one of the other IP version)."""
    ip = normalise(ip)
    return any(ip.version == net.version and ip in net for net in networks)


def client_address(
    peer: str, forwarded_for: Sequence[str], trusted: Sequence[IPNetwork]
) -> IPAddress:
    """The address a request is judged by: ``peer`` (the socket's remote address) unless it is a
    trusted proxy; then the right-most ``X-Forwarded-For`` entry that is not a trusted proxy
    (all the header's values taken as one comma-separated list, in order).

    Raises ValueError when ``peer`` itself is not an address (the caller refuses the request).
    """
    hop = parse_address(peer)
    if hop is None:
        raise ValueError("the connection's peer is not an IP address")
    if not is_allowed(hop, trusted):
        return hop  # the header is the client's own claim: ignored
    entries = [e for value in forwarded_for for e in value.split(",")]
    for entry in reversed(entries[-MAX_HOPS:]):
        if not entry.strip():
            continue  # "a,,b" or a trailing comma: nothing claimed
        parsed = parse_address(entry)
        if parsed is None:
            return hop  # garbage: judged as the last trusted hop, never by what lies left of it
        hop = parsed
        if not is_allowed(hop, trusted):
            return hop
    return hop  # every hop was a trusted proxy: the farthest one is the client
