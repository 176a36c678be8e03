"""``hushscribe deploy firewall``: what the rules admit, in nftables and ufw, and the errors for
addresses and ports the rules cannot use. (``nft`` itself checks and runs the rules in
tests/integration/test_deploy_files.py.)"""

from __future__ import annotations

from ipaddress import ip_network

import pytest
from typer.testing import CliRunner

from hushscribe.cli.deploy import app
from hushscribe.deploy.firewall import (
    FirewallError,
    Outbound,
    Rules,
    nftables,
    parse_network,
    parse_outbound,
)


def deploy(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def chain(text: str, name: str) -> list[str]:
    """The rule lines of one nftables chain, stripped."""
    lines = text.splitlines()
    start = lines.index(f"\tchain {name} {{")
    end = lines.index("\t}", start)
    return [line.strip() for line in lines[start + 1 : end]]


def test_nftables_admits_the_lan_to_the_port_and_nothing_else_in() -> None:
    code, out, err = deploy(
        "firewall", "--lan", "192.168.10.0/24", "--lan", "fd00:10::/64", "--port", "8443"
    )
    assert code == 0, err
    assert out.startswith("#!/usr/sbin/nft -f\n")
    assert "hushscribe deploy firewall --lan 192.168.10.0/24 --lan fd00:10::/64 --port 8443" in out
    assert "table inet hushscribe\ndelete table inet hushscribe\n" in out  # reload replaces it
    assert chain(out, "input") == [
        "type filter hook input priority filter; policy drop;",
        'iif "lo" accept',
        "ct state invalid drop",
        "ct state established,related accept",
        "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert, "
        "mld-listener-query } accept",
        'ip saddr { 192.168.10.0/24 } tcp dport 8443 accept comment "hushscribe clients"',
        'ip6 saddr { fd00:10::/64 } tcp dport 8443 accept comment "hushscribe clients"',
        'limit rate 10/minute burst 20 packets log prefix "hushscribe in-drop: "',
        "counter",
    ]
    output = chain(out, "output")
    assert output[:4] == [
        "type filter hook output priority filter; policy drop;",
        'oif "lo" accept',
        "ct state invalid drop",
        "ct state established,related accept",
    ]
    assert not [line for line in output if "daddr" in line]  # no destination is allowed out
    assert "SSH is refused too" in out and "no --ssh-from" in err


def test_nftables_allows_the_named_destinations_out_and_ssh_from_admins() -> None:
    code, out, _ = deploy(
        "firewall", "--lan", "10.20.0.0/16", "--port", "443",
        "--allow-out", "10.20.5.7:5432", "--allow-out", "10.30.0.0/24:636/tcp",
        "--allow-out", "[fd00:20::9]:514/udp", "--ssh-from", "10.99.0.0/24",
    )  # fmt: skip
    assert code == 0
    output = chain(out, "output")
    assert 'ip daddr 10.20.5.7 tcp dport 5432 accept comment "allowed out: 10.20.5.7:5432/tcp"' in (
        output
    )
    assert any(line.startswith("ip daddr 10.30.0.0/24 tcp dport 636 accept") for line in output)
    assert any(line.startswith("ip6 daddr fd00:20::9 udp dport 514 accept") for line in output)
    inbound = chain(out, "input")
    assert 'ip saddr { 10.99.0.0/24 } tcp dport 22 accept comment "SSH from admin networks"' in (
        inbound
    )
    assert 'ip saddr { 10.20.0.0/16 } tcp dport 443 accept comment "hushscribe clients"' in inbound
    assert "SSH is refused too" not in out


def test_overlapping_networks_are_merged_for_nft() -> None:
    """nftables refuses overlapping intervals in one set: 10.1/16 inside 10/8 disappears."""
    rules = Rules(
        port=8443,
        lan=(ip_network("10.0.0.0/8"), ip_network("10.1.0.0/16"), ip_network("192.168.1.0/25"),
             ip_network("192.168.1.128/25"), ip_network("fd00::/64"), ip_network("fd00::/64")),
    )  # fmt: skip
    assert [str(n) for n in rules.lan] == ["10.0.0.0/8", "192.168.1.0/24", "fd00::/64"]
    assert "ip saddr { 10.0.0.0/8, 192.168.1.0/24 } tcp dport 8443" in nftables(rules)


def test_ufw_script() -> None:
    code, out, _ = deploy(
        "firewall", "--lan", "192.168.10.0/24", "--lan", "fd00:10::/64", "--port", "8443",
        "--allow-out", "192.168.10.20:5432", "--allow-out", "[fd00:10::53]:53/udp",
        "--ssh-from", "192.168.99.0/24", "--format", "ufw",
    )  # fmt: skip
    assert code == 0
    commands = [line for line in out.splitlines() if line and not line.startswith("#")]
    assert commands == [
        "set -eu",
        "ufw allow in on lo",
        "ufw allow out on lo",
        "ufw allow in proto tcp from 192.168.10.0/24 to any port 8443 comment 'hushscribe clients'",
        "ufw allow in proto tcp from fd00:10::/64 to any port 8443 comment 'hushscribe clients'",
        "ufw allow in proto tcp from 192.168.99.0/24 to any port 22 "
        "comment 'SSH from admin networks'",
        "ufw allow out proto tcp to 192.168.10.20 port 5432 "
        "comment 'allowed out: 192.168.10.20:5432/tcp'",
        "ufw allow out proto udp to fd00:10::53 port 53 "
        "comment 'allowed out: [fd00:10::53]:53/udp'",
        "ufw default deny incoming",
        "ufw default deny outgoing",
        "ufw --force enable",
    ]
    assert out.startswith("#!/bin/sh\n")
    assert "--format ufw" in out and "IPV6=yes" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lan", "192.168.10.5/24"], "192.168.10.5/24 has host bits set; the network is "
         "192.168.10.0/24"),
        (["--lan", "192.168.300.0/24"], "'192.168.300.0/24' is not an IPv4 or IPv6 address"),
        (["--lan", "fd00::/129"], "'fd00::/129' is not an IPv4 or IPv6 address"),
        (["--lan", "lan.example"], "give the address"),
        (["--lan", "0.0.0.0/0"], "0.0.0.0/0 is every address"),
        (["--lan", "::/0"], "::/0 is every address"),
        ([], "name at least one client network"),
        (["--lan", "10.0.0.0/8", "--allow-out", "10.0.0.5"], "has no port"),
        (["--lan", "10.0.0.0/8", "--allow-out", "ldap.example:636"], "give the address"),
        (["--lan", "10.0.0.0/8", "--allow-out", "fd00::5:636"], "IPv6 address in brackets"),
        (["--lan", "10.0.0.0/8", "--allow-out", "10.0.0.5:70000"], "not between 1 and 65535"),
        (["--lan", "10.0.0.0/8", "--allow-out", "10.0.0.5:ldap"], "port 'ldap' is not a number"),
        (["--lan", "10.0.0.0/8", "--ssh-from", "10.0.0.1/8"], "has host bits set"),
    ],
)  # fmt: skip
def test_bad_addresses_are_usage_errors(args: list[str], message: str) -> None:
    code, out, err = deploy("firewall", *args)
    assert code == 2
    assert out == ""
    flat = " ".join(err.replace("│", " ").split())  # rich wraps the message in a box
    assert "Invalid value for" in flat
    assert " ".join(message.split()) in flat


def test_bad_port_and_format_are_usage_errors() -> None:
    for args in (["--port", "0"], ["--port", "65536"], ["--format", "iptables"]):
        code, out, err = deploy("firewall", "--lan", "10.0.0.0/8", *args)
        assert code == 2 and out == "", args
        assert "Invalid value for '--" in err


def test_parsers() -> None:
    assert parse_network(" 10.1.2.3 ") == ip_network("10.1.2.3/32")
    assert parse_outbound("[fd00::/64]:5432") == Outbound(ip_network("fd00::/64"), 5432, "tcp")
    assert parse_outbound("10.0.0.9:514/UDP") == Outbound(ip_network("10.0.0.9/32"), 514, "udp")
    assert str(parse_outbound("[fd00::9]:514/udp")) == "[fd00::9]:514/udp"
    with pytest.raises(FirewallError, match="between 1 and 65535"):
        Rules(port=0, lan=(ip_network("10.0.0.0/8"),))


def test_the_samples_are_printed_from_the_package() -> None:
    code, unit, _ = deploy("systemd")
    assert code == 0 and "[Service]" in unit and "Type=notify" in unit
    code, gpu, _ = deploy("systemd", "--gpu")
    assert code == 0 and "DeviceAllow=char-nvidia-frontend rw" in gpu
    code, site, _ = deploy("nginx")
    assert code == 0 and "proxy_pass http://hushscribe;" in site


@pytest.mark.parametrize("command", [[], ["firewall"], ["systemd"], ["nginx"]])
def test_help(command: list[str]) -> None:
    code, out, _ = deploy(*command, "--help")
    assert code == 0
    flat = " ".join(out.replace("│", " ").split())
    if command == ["firewall"]:
        for option in ("--lan", "--port", "--allow-out", "--ssh-from", "--format"):
            assert option in flat
        assert "[fd00::5]:636" in flat
