"""``hushscribe transcribe FILES…``: files in, transcripts out, a progress bar per file."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from hushscribe.cli.common import console, err_console, state
from hushscribe.engine.options import make_options
from hushscribe.errors import HushscribeError, InvalidOption
from hushscribe.fsutil import atomic_write_bytes
from hushscribe.transcript import FORMATS, Transcript, render


@dataclass
class Outcome:
    path: Path
    ok: bool
    detail: str
    transcript: Transcript | None = None
    seconds: float = 0.0
    outputs: tuple[Path, ...] = ()


def parse_formats(value: str) -> list[str]:
    formats = [f.strip().lower() for f in value.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if not formats or unknown:
        raise InvalidOption(
            f"unknown output format {', '.join(unknown) or '(none)'}; "
            f"choose from {', '.join(FORMATS)}"
        )
    return formats


def _extension(fmt: str) -> str:
    return "json" if fmt in ("json", "verbose_json") else fmt


def _targets(src: Path, out_dir: Path, formats: list[str], taken: set[Path]) -> list[Path]:
    """Output paths for one input; a second input with the same stem gets ``-2``, ``-3``…"""
    stem, n = src.stem, 1
    while True:
        suffix = "" if n == 1 else f"-{n}"
        names = [
            out_dir / f"{stem}{suffix}{'.verbose' if f == 'verbose_json' else ''}.{_extension(f)}"
            for f in formats
        ]
        if not taken.intersection(names):
            taken.update(names)
            return names
        n += 1


class _Bar:
    """A file's progress bar, fed by the engine as it decodes and transcribes."""

    def __init__(self, rich: Progress, bar: TaskID) -> None:
        self.rich, self.bar = rich, bar

    def decoding(self) -> None:
        pass

    def transcribing(self) -> None:
        pass

    def progress(self, done: float, total: float) -> None:
        self.rich.update(self.bar, total=total, completed=done,
                             audio=f"{done:.0f} / {total:.0f} s")  # fmt: skip


def transcribe_cmd(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Argument(help="Audio or video files.", show_default=False)],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model name.")] = None,
    language: Annotated[
        str | None, typer.Option("--language", "-l", help="Spoken language; detected if left out.")
    ] = None,
    task: Annotated[
        str, typer.Option(help="`transcribe`, or `translate` to English.")
    ] = "transcribe",
    fmt: Annotated[
        str, typer.Option("--format", "-f", help=f"Comma-separated: {', '.join(FORMATS)}.")
    ] = "txt",
    output_dir: Annotated[
        Path, typer.Option("--output-dir", "-o", help="Where outputs are written.")
    ] = Path(),
    word_timestamps: Annotated[bool, typer.Option(help="Time every word.")] = False,
    vad: Annotated[bool, typer.Option(help="Skip silence with Silero VAD.")] = True,
    beam_size: Annotated[int | None, typer.Option(help="Beam size (default: setting).")] = None,
    initial_prompt: Annotated[
        str | None, typer.Option(help="Text that primes style and vocabulary.")
    ] = None,
    hotwords: Annotated[str | None, typer.Option(help="Words and names to favour.")] = None,
    zh_script: Annotated[
        str | None, typer.Option(help="Chinese output: simplified, traditional or as-is.")
    ] = None,
    batched: Annotated[
        bool | None, typer.Option(help="Batched pipeline (default: by file length).")
    ] = None,
    diarize: Annotated[
        bool, typer.Option("--diarize", help="Label who spoke (needs the speaker model).")
    ] = False,
    num_speakers: Annotated[
        int | None, typer.Option(help="With --diarize: exactly this many speakers.")
    ] = None,
    min_speakers: Annotated[
        int | None, typer.Option(help="With --diarize: at least this many speakers.")
    ] = None,
    max_speakers: Annotated[
        int | None, typer.Option(help="With --diarize: at most this many speakers.")
    ] = None,
) -> None:
    """Transcribe (or translate) files into text, subtitles or JSON."""
    # Here, not at the top: every command imports this module, and these bring PyAV,
    # CTranslate2 and faster-whisper, which `serve --role api` must not load.
    from hushscribe import audio
    from hushscribe.engine.longform import transcribe_file
    from hushscribe.engine.manager import ModelManager
    from hushscribe.jobs.speakers import SpeakerStep, read_samples

    settings = state(ctx).settings
    formats = parse_formats(fmt)
    options = make_options(
        task=task,
        language=language,
        word_timestamps=word_timestamps,
        vad=vad,
        beam_size=beam_size,
        initial_prompt=initial_prompt,
        hotwords=hotwords,
        zh_script=zh_script,
        batched=batched,
        diarize=diarize,
        num_speakers=num_speakers,
        min_speakers=min_speakers,
        max_speakers=max_speakers,
    )
    speakers = SpeakerStep(settings)
    if diarize:
        speakers.encoder()  # a missing speaker model stops here, before any file is read
    output_dir.mkdir(parents=True, exist_ok=True)
    manager = ModelManager(settings)
    taken: set[Path] = set()
    outcomes: list[Outcome] = []
    with manager.use(model) as loaded:
        err_console.print(
            f"model [bold]{loaded.info.name}[/] on {loaded.device} ({loaded.compute_type}), "
            f"loaded in {loaded.load_seconds:.1f} s"
        )
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[audio]}"),
            TimeElapsedColumn(),
            console=err_console,
        )
        with progress:
            for src in files:
                bar = progress.add_task(f"{src.name[:40]}", total=None, audio="decoding")
                started = time.perf_counter()
                try:
                    reader = partial(audio.AudioReader, src, settings.audio)
                    result = transcribe_file(
                        loaded, reader, options, settings.engine, _Bar(progress, bar)
                    )
                    result = speakers.apply(result, options, partial(read_samples, reader))
                    if result.diarization_error:
                        warning = f"{src.name}: no speakers: {result.diarization_error}"
                        err_console.print(warning, style="yellow", markup=False, highlight=False)
                    targets = _targets(src, output_dir, formats, taken)
                    for f, target in zip(formats, targets, strict=True):
                        atomic_write_bytes(target, render(result, f).encode(), mode=0o644)
                    outcomes.append(
                        Outcome(
                            src, True, "ok", result, time.perf_counter() - started, tuple(targets)
                        )
                    )
                except HushscribeError as exc:
                    progress.update(
                        bar, description=f"[red]{src.name[:40]}[/]", total=1, audio=exc.code
                    )
                    outcomes.append(Outcome(src, False, f"{exc.code}: {exc.message}"))
    _summary(outcomes)
    if not all(o.ok for o in outcomes):
        raise typer.Exit(1)


def _summary(outcomes: list[Outcome]) -> None:
    table = Table(title="hushscribe transcribe")
    for col in ("file", "status", "language", "audio", "speed", "outputs"):
        # Names and paths are what a user copies next: folded onto more lines, never cut short.
        long = col in ("file", "outputs")
        table.add_column(col, overflow="fold" if long else "ellipsis", no_wrap=False)
    for o in outcomes:
        t = o.transcript
        if t is None:
            table.add_row(o.path.name, "[red]failed[/]", "", "", "", "")
            continue
        table.add_row(
            o.path.name,
            "[green]ok[/]",
            f"{t.language} ({t.language_probability:.0%})",
            f"{t.duration:.1f} s",
            f"{t.duration / o.seconds:.1f}x real time" if o.seconds else "",
            "\n".join(str(p) for p in o.outputs),
        )
    console.print(table)
    for o in outcomes:
        if not o.ok:
            err_console.print(
                f"[red]failed[/] {o.path}: {o.detail}", highlight=False, soft_wrap=True
            )
