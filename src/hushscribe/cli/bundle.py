"""``hushscribe bundle …``: build an offline install bundle on a connected machine; check one."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from hushscribe.bundle.create import Advance, Request, Status, create_bundle
from hushscribe.bundle.errors import BundleError
from hushscribe.bundle.verify import BundleUnreadable, verify
from hushscribe.bundle.wheels import DEFAULT_PLATFORM
from hushscribe.cli.common import bytes_progress, console, err_console, state
from hushscribe.engine.store import ModelStore

app = typer.Typer(
    help="Offline install bundles: build one on a connected machine, check one anywhere.",
    no_args_is_help=True,
)


class RichUi:
    """Progress on stderr: a spinner per step (with pip's latest line), a bar per byte count."""

    @contextmanager
    def step(self, text: str) -> Iterator[Status]:
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
            disable=not err_console.is_terminal,  # a log gets the ✓ lines only
        ) as bar:
            task = bar.add_task(escape(text), total=None)
            yield lambda line: bar.update(task, description=escape(line[:110]))

    @contextmanager
    def bytes(self, text: str, total: int) -> Iterator[Advance]:
        bar = bytes_progress()
        bar.disable = not err_console.is_terminal
        with bar:
            task = bar.add_task(escape(text), total=total or None)
            yield lambda n: bar.advance(task, n)

    def note(self, text: str) -> None:
        err_console.print(f"[green]✓[/] {escape(text)}", highlight=False, soft_wrap=True)


def _split(values: list[str] | None) -> list[str]:
    """``--models a,b --models c`` → [a, b, c]."""
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


def _this_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


@app.command()
def create(
    ctx: typer.Context,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            metavar="PATH",
            help="Where the bundle goes: a new directory, or a .tar.gz when the name ends so.",
            show_default=False,
        ),
    ],
    models: Annotated[
        list[str] | None,
        typer.Option(
            "--models",
            "-m",
            metavar="NAME,…",
            help="Models from the store to include, comma-separated (the first becomes the "
            "starter config's default model). Default: every installed model.",
            show_default=False,
        ),
    ] = None,
    extras: Annotated[
        list[str] | None,
        typer.Option(
            "--extras",
            metavar="EXTRA,…",
            help="hushscribe extras to include, comma-separated: gpu (CUDA 12 libraries for "
            "ctranslate2), ldap, …; an undefined one is an error that lists the defined ones.",
            show_default=False,
        ),
    ] = None,
    python: Annotated[
        str,
        typer.Option(
            "--python",
            metavar="X.Y",
            help="The target host's CPython version, MAJOR.MINOR. Default: this Python's.",
            show_default=False,
        ),
    ] = "",
    platform: Annotated[
        list[str] | None,
        typer.Option(
            "--platform",
            metavar="TAG",
            help=f"The target's wheel platform tag (repeatable; default {DEFAULT_PLATFORM}). "
            "manylinux_2_N also takes wheels for older glibc versions.",
            show_default=False,
        ),
    ] = None,
    source: Annotated[
        Path | None,
        typer.Option(
            "--source",
            metavar="DIR",
            help="hushscribe source checkout to build the wheel from. Default: the checkout "
            "this hushscribe is installed from in editable mode.",
            show_default=False,
        ),
    ] = None,
    deb: Annotated[
        list[str] | None,
        typer.Option(
            "--deb",
            metavar="PACKAGE",
            help="A Debian package to include (apt-get download; repeatable or comma-separated). "
            "apt-get download does not follow dependencies: name them all, e.g. for a Debian 12 "
            "host without venv: python3-venv, python3.11-venv, python3-pip-whl, "
            "python3-setuptools-whl, python3-distutils. None is needed otherwise.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Build an offline install bundle: wheels, models, installer, checksums. Needs pip's index
    (this machine is connected); the host it is for needs nothing but python3."""
    store = ModelStore(state(ctx).settings.models_dir)
    request = Request(
        out=out.absolute(),
        models=_split(models) if models else None,
        extras=_split(extras),
        python=python or _this_python(),
        platforms=_split(platform) or [DEFAULT_PLATFORM],
        source=source,
        debs=_split(deb),
    )
    result = create_bundle(request, store, RichUi())
    console.print(
        f"Bundle [bold]{escape(str(result.path))}[/]: hushscribe {result.version}, "
        f"{result.wheels} wheels, models {', '.join(result.models)}; "
        f"{result.bytes / 1e6:,.0f} MB",
        highlight=False,
        soft_wrap=True,
    )
    where = result.path.name
    unpack = f"tar xzf {where} && cd {request.top}" if request.archive else f"cd {where}"
    console.print(
        f"On the air-gapped host: {unpack} && sudo ./install.sh", highlight=False, soft_wrap=True
    )


@app.command("verify")
def verify_cmd(
    path: Annotated[
        Path,
        typer.Argument(help="A bundle directory or .tar.gz.", metavar="PATH", show_default=False),
    ],
) -> None:
    """Check every file of a bundle against its SHA256SUMS; name each bad, missing or unlisted
    file (exit status 1). The same check as the bundle's own verify_bundle.py."""
    # a directory's files are counted; an archive's are only known once it is read
    total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0
    try:
        with bytes_progress() as bar:
            task = bar.add_task(f"checking {escape(path.name)}", total=total or None)
            report = verify(path, progress=lambda n: bar.advance(task, n))
    except BundleUnreadable as exc:
        raise BundleError(str(exc)) from None
    for line in report.lines():
        style = "green" if report.ok else "red" if not line.startswith("bundle") else "bold red"
        console.print(f"[{style}]{escape(line)}[/]", highlight=False, soft_wrap=True)
    if not report.ok:
        raise typer.Exit(1)
