"""``hushscribe deploy``: print deployment files (firewall rules, the systemd unit, the nginx site)
to standard output, to be reviewed and installed by an administrator; nothing is changed here."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated

import typer

from hushscribe.cli.common import err_console
from hushscribe.deploy import sample
from hushscribe.deploy.firewall import (
    FirewallError,
    IPNetwork,
    Outbound,
    Rules,
    nftables,
    parse_network,
    parse_outbound,
    ufw,
)

app = typer.Typer(
    help="Print deployment files: firewall rules, the systemd unit, the nginx site.",
    no_args_is_help=True,
)


class FirewallFormat(StrEnum):
    nftables = "nftables"
    ufw = "ufw"


def _networks(values: list[str], option: str) -> list[IPNetwork]:
    networks = []
    for value in values:
        try:
            networks.append(parse_network(value))
        except FirewallError as exc:
            raise typer.BadParameter(str(exc), param_hint=f"'{option}'") from None
    return networks


def _outbound(values: list[str]) -> list[Outbound]:
    allowed = []
    for value in values:
        try:
            allowed.append(parse_outbound(value))
        except FirewallError as exc:
            raise typer.BadParameter(str(exc), param_hint="'--allow-out'") from None
    return allowed


@app.command("firewall")
def firewall_cmd(
    lan: Annotated[
        list[str] | None,
        typer.Option(
            "--lan",
            help="Network (CIDR) whose clients may reach the service port; repeat for several. "
            "IPv4 and IPv6.",
            show_default=False,
        ),
    ] = None,
    port: Annotated[
        int,
        typer.Option(
            min=1, max=65535, help="The port clients connect to (nginx's, or hushscribe's own)."
        ),
    ] = 8443,
    allow_out: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-out",
            help="An outbound destination to allow: HOST_OR_CIDR:PORT, or HOST_OR_CIDR:PORT/udp "
            "(default tcp); IPv6 in brackets, e.g. \\[fd00::5]:636. PostgreSQL, LDAP, a syslog "
            "collector, DNS or NTP servers: addresses, not names. Repeat for several.",
            show_default=False,
        ),
    ] = None,
    ssh_from: Annotated[
        list[str] | None,
        typer.Option(
            "--ssh-from",
            help="Network (CIDR) allowed to reach SSH (port 22); without it SSH is refused too.",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[
        FirewallFormat,
        typer.Option("--format", help="nftables (an `nft -f` file) or ufw (a shell script)."),
    ] = FirewallFormat.nftables,
) -> None:
    """Firewall rules for this host (nftables or ufw).

    Outgoing: nothing but replies, loopback and --allow-out.

    Incoming: nothing but the service port from --lan, and SSH from --ssh-from."""
    if not lan:
        raise typer.BadParameter("name at least one client network", param_hint="'--lan'")
    rules = Rules(
        port=port,
        lan=tuple(_networks(lan, "--lan")),
        outbound=tuple(_outbound(allow_out or [])),
        ssh_from=tuple(_networks(ssh_from or [], "--ssh-from")),
    )
    if not rules.ssh_from:
        err_console.print(
            "note: no --ssh-from, so these rules refuse SSH too; load them from the console",
            highlight=False,
        )
    sys.stdout.write(nftables(rules) if fmt is FirewallFormat.nftables else ufw(rules))


@app.command("systemd")
def systemd_cmd(
    gpu: Annotated[
        bool,
        typer.Option(
            "--gpu",
            help="Print the drop-in that opens the NVIDIA devices instead "
            "(/etc/systemd/system/hushscribe.service.d/gpu.conf).",
        ),
    ] = False,
) -> None:
    """Print the hardened systemd unit (/etc/systemd/system/hushscribe.service)."""
    sys.stdout.write(sample("systemd-gpu" if gpu else "systemd"))


@app.command("nginx")
def nginx_cmd() -> None:
    """Print the nginx site: TLS, LAN only, proxied to hushscribe (/etc/nginx/conf.d/)."""
    sys.stdout.write(sample("nginx"))
