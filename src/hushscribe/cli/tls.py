"""``hushscribe tls self-signed``: a certificate for a first install, and what to do with it."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from hushscribe.cli.common import console, state
from hushscribe.security.tls import MAX_DAYS, write_self_signed

app = typer.Typer(help="HTTPS certificates (written here; nothing is requested online).")


@app.callback()
def _tls() -> None:
    """HTTPS certificates (written here; nothing is requested online)."""


@app.command("self-signed")
def self_signed(
    ctx: typer.Context,
    host: Annotated[
        list[str] | None,
        typer.Option("--host", help="DNS name clients use (repeat for several)."),
    ] = None,
    ip: Annotated[
        list[str] | None,
        typer.Option("--ip", help="IP address clients use (repeat for several)."),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out-dir", help="Where cert.pem and key.pem go (default: <data_dir>/tls)."),
    ] = None,
    days: Annotated[
        int, typer.Option(min=1, max=MAX_DAYS, help="Validity in days (browsers accept 825).")
    ] = MAX_DAYS,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing certificate and key.")
    ] = False,
) -> None:
    """Write a self-signed certificate and key for the names and addresses clients use."""
    hosts, ips = host or [], ip or []
    if not hosts and not ips:
        raise typer.BadParameter("name at least one --host or --ip", param_hint="--host/--ip")
    directory = out_dir if out_dir is not None else state(ctx).settings.data_dir / "tls"
    cert, key = directory / "cert.pem", directory / "key.pem"
    fingerprint = write_self_signed(cert, key, hosts, ips, days, force=force)
    cert_abs, key_abs = cert.absolute(), key.absolute()
    # Plain text: rich would read "[" as markup and turn ":AB:" of a fingerprint into an emoji.
    say = partial(console.print, markup=False, highlight=False, emoji=False, soft_wrap=True)
    say(f"certificate  {cert_abs}")
    say(f"private key  {key_abs} (mode 0600)")
    say(f"SHA-256      {fingerprint}")
    say("\nAdd to the config file:")
    # JSON quoting is a valid TOML basic string, also for a path with quotes or backslashes.
    say(f"[server]\ntls_cert = {json.dumps(str(cert_abs))}\ntls_key = {json.dumps(str(key_abs))}")
    say(
        "\nThe certificate is self-signed: browsers warn until it is trusted (import cert.pem "
        "into the browser or the system, or accept an exception after comparing the SHA-256 "
        "above). Browsers allow the microphone only over HTTPS, except on localhost."
    )
