"""Host firewall rules for a hushscribe server in a closed network, as nftables or ufw.

What the rules say: nothing leaves the host but replies, loopback traffic and the outbound
connections named (a database, a directory, a syslog collector); nothing comes in but the service
port from the clients' networks (and SSH from the networks named for it). They cover the whole
host, not only hushscribe: the unit's ``IPAddressDeny=`` fences the service itself, this fences the
machine.

Addresses are given as IP addresses or networks, never names: the rules are loaded before name
resolution works, and a name in them would be looked up once, at load time, over the network these
rules are meant to close. Everything here is a pure function of its arguments.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, collapse_addresses, ip_network
from typing import Literal

IPNetwork = IPv4Network | IPv6Network
Protocol = Literal["tcp", "udp"]
SSH_PORT = 22


class FirewallError(ValueError):
    """An address, network or port the rules cannot use; the message says why and what to write."""


@dataclass(frozen=True)
class Outbound:
    """One allowed outbound destination: a host or network, a port, a protocol."""

    network: IPNetwork
    port: int
    protocol: Protocol = "tcp"

    def __str__(self) -> str:
        host = _host(self.network)
        if self.network.version == 6:
            host = f"[{host}]"
        return f"{host}:{self.port}/{self.protocol}"


@dataclass(frozen=True)
class Rules:
    """What the firewall admits. Networks are kept collapsed (overlaps merged, duplicates gone):
    nftables refuses overlapping intervals in one set."""

    port: int
    lan: tuple[IPNetwork, ...]
    outbound: tuple[Outbound, ...] = ()
    ssh_from: tuple[IPNetwork, ...] = field(default=())

    def __post_init__(self) -> None:
        check_port(self.port)
        if not self.lan:
            raise FirewallError("name at least one client network (--lan)")
        object.__setattr__(self, "lan", collapse(self.lan))
        object.__setattr__(self, "ssh_from", collapse(self.ssh_from))
        object.__setattr__(self, "outbound", tuple(dict.fromkeys(self.outbound)))


def check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise FirewallError(f"port {port} is not between 1 and 65535")
    return port


def parse_network(text: str) -> IPNetwork:
    """An IPv4 or IPv6 address (a one-host network) or CIDR network, strictly written."""
    value = text.strip()
    if not value:
        raise FirewallError("an empty address; write a CIDR such as 192.168.10.0/24")
    try:
        network = ip_network(value)
    except ValueError:
        try:
            loose = ip_network(value, strict=False)
        except ValueError:
            hint = (
                "; rules load before name resolution works, so give the address"
                if any(c.isalpha() for c in value) and ":" not in value
                else ""
            )
            raise FirewallError(
                f"{value!r} is not an IPv4 or IPv6 address or network (a CIDR such as "
                f"192.168.10.0/24 or fd00:10::/64){hint}"
            ) from None
        raise FirewallError(
            f"{value} has host bits set; the network is {loose} (or write one address without "
            "a prefix length)"
        ) from None
    if network.prefixlen == 0:
        raise FirewallError(f"{value} is every address; name the networks that need access")
    return network


def parse_outbound(text: str) -> Outbound:
    """``HOST_OR_CIDR:PORT[/tcp|/udp]``; IPv6 in brackets: ``[fd00::5]:636``."""
    spec = text.strip()
    protocol: Protocol = "tcp"
    head, slash, tail = spec.rpartition("/")
    if slash and tail.lower() in ("tcp", "udp"):
        spec, protocol = head, "udp" if tail.lower() == "udp" else "tcp"
    if spec.startswith("["):
        end = spec.find("]")
        if end < 0 or spec[end + 1 : end + 2] != ":":
            raise FirewallError(f"{text!r}: write [IPV6_ADDRESS_OR_CIDR]:PORT, e.g. [fd00::5]:636")
        host, port_text = spec[1:end], spec[end + 2 :]
    else:
        host, colon, port_text = spec.rpartition(":")
        if not colon:
            raise FirewallError(
                f"{text!r} has no port; write HOST_OR_CIDR:PORT, e.g. 10.0.0.5:5432"
            )
        if ":" in host:
            raise FirewallError(f"{text!r}: write an IPv6 address in brackets, e.g. [fd00::5]:636")
    try:
        port = int(port_text)
    except ValueError:
        raise FirewallError(f"{text!r}: port {port_text!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise FirewallError(f"{text!r}: port {port} is not between 1 and 65535")
    return Outbound(parse_network(host), port, protocol)


def collapse(networks: Iterable[IPNetwork]) -> tuple[IPNetwork, ...]:
    """IPv4 then IPv6 networks, each family with overlaps merged and sorted."""
    items = list(networks)
    v4 = collapse_addresses(n for n in items if isinstance(n, IPv4Network))
    v6 = collapse_addresses(n for n in items if isinstance(n, IPv6Network))
    return (*v4, *v6)


def command_line(rules: Rules, fmt: str) -> str:
    """The ``hushscribe deploy firewall`` call that produces these rules again."""
    words = ["hushscribe deploy firewall"]
    words += [f"--lan {n}" for n in rules.lan]
    words.append(f"--port {rules.port}")
    words += [f"--allow-out {o}" for o in rules.outbound]
    words += [f"--ssh-from {n}" for n in rules.ssh_from]
    words.append(f"--format {fmt}")
    return " ".join(words)


def _host(network: IPNetwork) -> str:
    """A one-address network as the address alone, others as CIDR."""
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def _family(networks: Iterable[IPNetwork], version: int) -> list[str]:
    return [_host(n) for n in networks if n.version == version]


NFT_TABLE = "hushscribe"
# IPv6 does not work without neighbour discovery (and the multicast listener reports switches
# use to deliver it); these ICMPv6 types never leave the link.
_ND_IN = "nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert, mld-listener-query"
_ND_OUT = (
    "nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, mld-listener-report, "
    "mld2-listener-report"
)


def _nft_from(networks: tuple[IPNetwork, ...], port: int, what: str) -> list[str]:
    rules = []
    for version, keyword in ((4, "ip"), (6, "ip6")):
        hosts = _family(networks, version)
        if hosts:
            rules.append(
                f'{keyword} saddr {{ {", ".join(hosts)} }} tcp dport {port} accept comment "{what}"'
            )
    return rules


def nftables(rules: Rules) -> str:
    """An ``nft -f`` script: table ``inet hushscribe``, replaced whole on each load."""
    inbound = _nft_from(rules.lan, rules.port, "hushscribe clients")
    inbound += _nft_from(rules.ssh_from, SSH_PORT, "SSH from admin networks")
    outbound = []
    for out in rules.outbound:
        keyword = "ip" if out.network.version == 4 else "ip6"
        outbound.append(
            f"{keyword} daddr {_host(out.network)} {out.protocol} dport {out.port} accept "
            f'comment "allowed out: {out}"'
        )
    lines = [
        "#!/usr/sbin/nft -f",
        "# hushscribe host firewall (nftables), made by:",
        f"#   {command_line(rules, 'nftables')}",
        "# Load with `nft -f FILE`; to keep it across reboots, include it from /etc/nftables.conf.",
        f"# It replaces only its own table (inet {NFT_TABLE}). A packet must be accepted by every",
        "# table at its hook, so the drop policies below hold whatever else is loaded.",
        *_ssh_warning(rules),
        "",
        f"table inet {NFT_TABLE}",
        f"delete table inet {NFT_TABLE}",
        "",
        f"table inet {NFT_TABLE} {{",
        "\tchain input {",
        "\t\ttype filter hook input priority filter; policy drop;",
        '\t\tiif "lo" accept',
        "\t\tct state invalid drop",
        "\t\tct state established,related accept",
        f"\t\ticmpv6 type {{ {_ND_IN} }} accept",
        *(f"\t\t{rule}" for rule in inbound),
        '\t\tlimit rate 10/minute burst 20 packets log prefix "hushscribe in-drop: "',
        "\t\tcounter",
        "\t}",
        "",
        "\tchain output {",
        "\t\ttype filter hook output priority filter; policy drop;",
        '\t\toif "lo" accept',
        "\t\tct state invalid drop",
        "\t\tct state established,related accept",
        f"\t\ticmpv6 type {{ {_ND_OUT} }} accept",
        *(f"\t\t{rule}" for rule in outbound),
        "\t\t# Anything else trying to leave is logged (a few a minute) and dropped.",
        '\t\tlimit rate 10/minute burst 20 packets log prefix "hushscribe out-drop: "',
        "\t\tcounter",
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "") + "'"


def ufw(rules: Rules) -> str:
    """A shell script of ``ufw`` commands (run as root)."""
    commands = ["ufw allow in on lo", "ufw allow out on lo"]
    for network in rules.lan:
        commands.append(
            f"ufw allow in proto tcp from {_host(network)} to any port {rules.port} "
            f"comment {_quote('hushscribe clients')}"
        )
    for network in rules.ssh_from:
        commands.append(
            f"ufw allow in proto tcp from {_host(network)} to any port {SSH_PORT} "
            f"comment {_quote('SSH from admin networks')}"
        )
    for out in rules.outbound:
        commands.append(
            f"ufw allow out proto {out.protocol} to {_host(out.network)} port {out.port} "
            f"comment {_quote(f'allowed out: {out}')}"
        )
    commands += ["ufw default deny incoming", "ufw default deny outgoing", "ufw --force enable"]
    lines = [
        "#!/bin/sh",
        "# hushscribe host firewall (ufw), made by:",
        f"#   {command_line(rules, 'ufw')}",
        "# ufw's own rules (before.rules) already accept replies to established connections and",
        "# ICMPv6 neighbour discovery. IPv6 rules need IPV6=yes in /etc/default/ufw.",
        *_ssh_warning(rules),
        "set -eu",
        *commands,
    ]
    return "\n".join(lines) + "\n"


def _ssh_warning(rules: Rules) -> list[str]:
    if rules.ssh_from:
        return []
    return ["# No --ssh-from: SSH is refused too; load these rules from the console."]
