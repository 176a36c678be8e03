"""The ``hushscribe`` command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from hushscribe import __version__
from hushscribe.cli import models
from hushscribe.cli.common import State, err_console
from hushscribe.cli.serve import serve_cmd
from hushscribe.cli.transcribe import transcribe_cmd
from hushscribe.errors import HushscribeError

app = typer.Typer(
    name="hushscribe",
    help="Speech-to-text that never leaves your network.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(models.app, name="models")
app.command("transcribe")(transcribe_cmd)
app.command("serve")(serve_cmd)


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
            "--config", "-c", help="TOML config file (or HUSHSCRIBE_CONFIG).", show_default=False
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir", help="Data directory (or HUSHSCRIBE_DATA_DIR).", show_default=False
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
    try:
        app()
    except HushscribeError as exc:
        err_console.print(
            f"[red]error[/] [dim]({exc.code})[/]: {exc.message}", highlight=False, soft_wrap=True
        )
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
