"""``hushscribe doctor``: check this host and its configuration, each finding with its fix."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from hushscribe.cli.common import bytes_progress, console, dev_layout, state
from hushscribe.doctor import report
from hushscribe.doctor.base import Advance, Check, worst
from hushscribe.doctor.run import run
from hushscribe.errors import HushscribeError
from hushscribe.settings import config_file_from_env


@contextmanager
def _hash_bar(label: str, total: int) -> Iterator[Advance]:
    """A progress bar on stderr while a model is hashed (gone when it is done)."""
    with bytes_progress() as bar:
        task = bar.add_task(label, total=total or None)
        yield lambda n: bar.advance(task, n)


def _config_file(ctx: typer.Context) -> Path | None:
    """The config file this invocation read, as ``State`` chose it."""
    obj = state(ctx)
    if obj.config is not None:
        return obj.config
    from_env = config_file_from_env()
    if from_env is not None or obj.data_dir is not None:
        return from_env
    found = dev_layout(Path.cwd())
    if found is not None and found[0] == obj.settings.data_dir:
        return found[1]
    return None


def doctor_cmd(
    ctx: typer.Context,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help="Trust the models' verified-cache: re-hash only files changed since their last "
            "check (default: re-hash every model file).",
        ),
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print a JSON list of {check, status, detail, fix} instead of a table."
        ),
    ] = False,
) -> None:
    """Check this host and its settings; print each finding with its fix.

    Models and their checksums, GPU, decoders, file permissions, TLS, network exposure, the
    egress guard, a test transcription. Exit code 1 when any check FAILs.
    """
    started = time.perf_counter()
    try:
        settings = state(ctx).settings
        config = _config_file(ctx)
    except HushscribeError as exc:
        rows = [Check("configuration", "FAIL", exc.message, "correct the setting named above")]
    else:
        where = f"config file {config}" if config else "no config file (defaults and environment)"
        rows = [Check("configuration", "OK", f"{where}; data directory {settings.data_dir}")]
        rows += run(settings, quick=quick, progress=_hash_bar)
    if as_json:
        print(report.as_json(rows))
    else:
        title = f"hushscribe doctor ({time.perf_counter() - started:.1f} s)"
        console.print(report.table(rows, title))
    if worst(rows) == "FAIL":
        raise typer.Exit(1)
