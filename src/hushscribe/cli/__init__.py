"""The ``hushscribe`` command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from typer.core import TyperGroup

from hushscribe import __version__
from hushscribe.cli import audit, bundle, db, deploy, models, tls
from hushscribe.cli.common import State, err_console
from hushscribe.cli.doctor import doctor_cmd
from hushscribe.cli.listen import listen_cmd
from hushscribe.cli.serve import serve_cmd
from hushscribe.cli.transcribe import transcribe_cmd
from hushscribe.cli.users import keys_app, users_app
from hushscribe.errors import HushscribeError
from hushscribe.security import egress

SHARED_OPTIONS = ("--config", "--data-dir")
"""Root options a user may also write after the command: `hushscribe transcribe x.wav --data-dir
D` (the dev layout `make serve` makes, and what users type, put them there)."""
_ROOT_VALUE_OPTIONS = ("-c", *SHARED_OPTIONS)


def hoist_shared_options(args: list[str]) -> list[str]:
    """Move ``--config``/``--data-dir`` written after the command to just before it, where the
    root reads them (later than any given before it, so they win as the later option does).
    Nothing after ``--`` moves."""
    at = 0  # the command: the first word that is neither a root option nor its value
    while at < len(args) and args[at].startswith("-"):
        at += 2 if args[at] in _ROOT_VALUE_OPTIONS else 1
    if at >= len(args):
        return args
    moved: list[str] = []
    rest: list[str] = []
    i = at + 1
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        if arg in SHARED_OPTIONS and i + 1 < len(args):
            moved += args[i : i + 2]
            i += 2
            continue
        if arg.split("=", 1)[0] in SHARED_OPTIONS and "=" in arg:
            moved.append(arg)
        else:
            rest.append(arg)
        i += 1
    return [*args[:at], *moved, args[at], *rest]


class _Root(TyperGroup):
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_shared_options(args))


app = typer.Typer(
    name="hushscribe",
    cls=_Root,
    help="Speech-to-text that never leaves your network.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(models.app, name="models")
app.add_typer(tls.app, name="tls")
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")
app.add_typer(audit.app, name="audit")
app.add_typer(bundle.app, name="bundle")
app.add_typer(deploy.app, name="deploy")
app.add_typer(db.app, name="db")
app.command("transcribe")(transcribe_cmd)
app.command("serve")(serve_cmd)
app.command("doctor")(doctor_cmd)
app.command("listen")(listen_cmd)


def _version(value: bool) -> None:
    if value:
        print(f"hushscribe {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="TOML config file (or HUSHSCRIBE_CONFIG). Also after the command.",
            show_default=False,
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Data directory (or HUSHSCRIBE_DATA_DIR; else ./.data when it holds what "
            "`make serve` prepared; else /var/lib/hushscribe). Also after the command.",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Speech-to-text that never leaves your network."""
    ctx.obj = State(config=config, data_dir=data_dir)


def main() -> None:
    """Entry point: expected errors become one readable line and exit code 2."""
    # Before any command runs: nothing but loopback until the settings (read by the command)
    # name more — LDAP, syslog, the database (security/egress.py).
    egress.install(egress.EgressPolicy())
    try:
        app()
    except HushscribeError as exc:
        err_console.print(  # the message is text, not markup: `hushscribe[convert]` stays
            f"[red]error[/] [dim]({exc.code})[/]: {escape(exc.message)}",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
