"""``hushscribe audit …``: check the audit log (or a copy of it), export a span, follow it.

``verify PATH`` needs nothing but PATH and the keys given: an auditor runs it on a copy, on
another machine, without the service's settings or data directory. Without PATH the commands
use the configured log (``[audit] dir``, default ``<data_dir>/audit``).
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from hushscribe.audit import read
from hushscribe.audit.events import event
from hushscribe.audit.keys import HMAC_KEY_FILE
from hushscribe.audit.verify import Report, verify
from hushscribe.cli.common import auditor, console, err_console, operator, state
from hushscribe.errors import InvalidRequest

app = typer.Typer(
    help="The audit log: verify it (or a copy), export a span, follow it.", no_args_is_help=True
)

CSV_COLUMNS = ("seq", "time", "type", "actor", "method", "address", "action", "target",
               "outcome", "details")  # fmt: skip

LogDir = Annotated[
    Path | None,
    typer.Argument(
        help="The log's folder (a copy will do); default: the configured one.", show_default=False
    ),
]


class Format(StrEnum):
    jsonl = "jsonl"
    csv = "csv"


def _log_dir(ctx: typer.Context, path: Path | None) -> Path:
    found = path if path is not None else state(ctx).settings.audit_dir
    if not found.is_dir():
        raise InvalidRequest(f"no audit log at {found} (not a folder)")
    return found


def parse_when(value: str | None, option: str, *, end: bool = False) -> datetime | None:
    """A ``--from``/``--to`` value: RFC 3339, or a date (for ``--to``, the whole of that day)."""
    if value is None:
        return None
    try:
        when = read.parse_time(value)
    except ValueError as exc:
        raise InvalidRequest(f"{option}: {exc}") from None
    if end and len(value.strip()) == 10:  # a date alone: up to the end of that day
        when += timedelta(days=1)
    return when


def _key_file(path: Path | None, what: str) -> Path | None:
    if path is not None and not path.is_file():
        raise InvalidRequest(f"{what}: no such file: {path}")
    return path


# --- verify ------------------------------------------------------------------------------------


@app.command("verify")
def verify_cmd(
    ctx: typer.Context,
    path: LogDir = None,
    public_key: Annotated[
        Path | None,
        typer.Option(
            "--public-key",
            help="The signing key's public half (PEM): checks the signed checkpoints.",
            show_default=False,
        ),
    ] = None,
    hmac_key: Annotated[
        Path | None,
        typer.Option(
            "--hmac-key",
            help="The log's HMAC key: checks every record's MAC "
            "(default without PATH: the service's own).",
            show_default=False,
        ),
    ] = None,
    from_: Annotated[
        str | None,
        typer.Option(
            "--from", help="Check from this date or time on (RFC 3339).", show_default=False
        ),
    ] = None,
) -> None:
    """Check the chain, the MACs and the signed checkpoints: exit 0 intact, 1 damaged."""
    since = parse_when(from_, "--from")
    public_key = _key_file(public_key, "--public-key")
    hmac_key = _key_file(hmac_key, "--hmac-key")
    if path is None and hmac_key is None:
        own = state(ctx).settings.keys_dir / HMAC_KEY_FILE
        hmac_key = own if own.is_file() else None
    audit_dir = _log_dir(ctx, path)
    files = read.log_files(audit_dir)
    size = sum(_size(f.path) for f in files)
    with _Working(f"checking {len(files)} files ({size / 1e6:.1f} MB)", big=size > 8_000_000):
        try:
            report = verify(audit_dir, public_key=public_key, hmac_key=hmac_key, since=since)
        except (OSError, ValueError) as exc:  # an unreadable folder, a key that is not one
            raise InvalidRequest(f"cannot check {audit_dir}: {exc}") from None
    _print_report(audit_dir, report)
    if path is None:  # the service's own log: checking it is on its record
        damage = report.damage
        auditor(ctx).log.append(event("audit_verified", operator(), address="local", details={
            k: v for k, v in {"records": report.records, "ok": report.ok,
                              "first_bad_seq": damage.seq if damage else None,
                              "damage": damage.kind if damage else None}.items() if v is not None
        }))  # fmt: skip
    if not report.ok:
        raise typer.Exit(1)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class _Working:
    """A progress bar (a pulse and the time taken) on stderr while a long check runs."""

    def __init__(self, what: str, big: bool) -> None:
        self.progress: Progress | None = None
        if big:
            self.progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                TimeElapsedColumn(), console=err_console, transient=True,
            )  # fmt: skip
            self.progress.add_task(what, total=None)

    def __enter__(self) -> None:
        if self.progress is not None:
            self.progress.start()

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


def _print_report(audit_dir: Path, report: Report) -> None:
    span = f"{report.first_time or '-'} → {report.last_time or '-'}"
    console.print(
        f"{escape(str(audit_dir))}: {report.records} records in {report.files} files, "
        f"{span}, {report.checkpoints} checkpoints, head seq {report.head_seq}",
        highlight=False,
        soft_wrap=True,
    )
    for warning in report.warnings:
        console.print(f"[yellow]warning[/]: {escape(warning)}", highlight=False, soft_wrap=True)
    damage = report.damage
    if damage is None:
        console.print(f"[green]OK[/]: {report.records} records intact", highlight=False)
        return
    console.print(
        f"[red]DAMAGED[/]: {escape(damage.file or '-')} seq {damage.seq}: {escape(damage.kind)}"
        f" — {escape(damage.detail)}",
        highlight=False,
        soft_wrap=True,
    )


# --- export ------------------------------------------------------------------------------------


@app.command("export")
def export_cmd(
    ctx: typer.Context,
    path: LogDir = None,
    from_: Annotated[
        str | None, typer.Option("--from", help="From this date or time (RFC 3339).")
    ] = None,
    to: Annotated[
        str | None,
        typer.Option("--to", help="Up to this time, exclusive; a date: to its end."),
    ] = None,
    format: Annotated[Format, typer.Option("--format", help="jsonl or csv.")] = Format.jsonl,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Write here (mode 0600); default stdout.", show_default=False
        ),
    ] = None,
) -> None:
    """Records of a time span, as JSON Lines (the records as logged) or CSV."""
    since, until = parse_when(from_, "--from"), parse_when(to, "--to", end=True)
    found = read.records(_log_dir(ctx, path), since, until)
    if output is None:
        count = write_export(found, format, sys.stdout)
        sys.stdout.flush()
    else:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            count = write_export(found, format, f)
    err_console.print(f"[dim]{count} records[/]", highlight=False)
    if path is None:  # records taken out of the service's own log: on its record
        span = {"records": count, "from": from_, "to": to, "format": format}
        kept = {k: v for k, v in span.items() if v is not None}
        auditor(ctx).log.append(event("audit_exported", operator(), address="local", details=kept))


def write_export(found: Iterator[dict[str, Any]], format: Format, out: IO[str]) -> int:
    count = 0
    if format is Format.jsonl:
        for record in found:
            out.write(read.dumps(record) + "\n")
            count += 1
        return count
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for record in found:
        actor = _actor(record)
        details = json.dumps(record.get("details") or {}, sort_keys=True, separators=(",", ":"),
                             ensure_ascii=False)  # fmt: skip
        writer.writerow(
            [
                record.get("seq"), record.get("time"), record.get("type"),
                actor.get("user") or "", actor.get("method") or "", record.get("address") or "",
                record.get("action"), record.get("target") or "", record.get("outcome"), details,
            ]
        )  # fmt: skip
        count += 1
    return count


# --- tail --------------------------------------------------------------------------------------


def _actor(record: dict[str, Any]) -> dict[str, Any]:
    who = record.get("actor")
    return who if isinstance(who, dict) else {}


def line(record: dict[str, Any]) -> str:
    """One record, readable: time, type, actor, address, target, outcome."""
    who = _actor(record)
    actor = who.get("user") or who.get("method") or "-"
    if who.get("key_id"):
        actor += f" (key {who['key_id']})"
    fields = (record.get("time"), record.get("type"), actor, record.get("address"),
              record.get("target"), record.get("outcome"))  # fmt: skip
    return "  ".join(str(f) if f is not None else "-" for f in fields)


def _show(record: dict[str, Any]) -> None:
    style = "" if record.get("outcome") == "ok" else "yellow"
    text = escape(line(record))
    console.print(f"[{style}]{text}[/]" if style else text, highlight=False, soft_wrap=True)


@app.command("tail")
def tail_cmd(
    ctx: typer.Context,
    path: LogDir = None,
    lines: Annotated[int, typer.Option("--lines", "-n", min=0, help="How many.")] = 10,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Print new records as they come (Ctrl-C).")
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.05, help="Seconds between looks, with -f.")
    ] = 0.5,
) -> None:
    """The last records, one line each."""
    audit_dir = _log_dir(ctx, path)
    shown = read.last(audit_dir, lines)
    for record in shown:
        _show(record)
    sys.stdout.flush()
    if not follow:
        return
    seen = shown[-1].get("seq") if shown else read.head_seq(audit_dir)
    try:
        while True:
            time.sleep(interval)
            for record in read.records(audit_dir, after_seq=seen if seen is not None else -1):
                _show(record)
                seen = record.get("seq", seen)
            sys.stdout.flush()
    except KeyboardInterrupt:
        return  # Ctrl-C ends a follow: not an error
