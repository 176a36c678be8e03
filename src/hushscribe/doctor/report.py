"""The doctor's report: a table for people, a JSON list for scripts."""

from __future__ import annotations

import json

from rich.table import Table
from rich.text import Text

from hushscribe.doctor.base import Check, Status

STYLE: dict[Status, str] = {"OK": "bold green", "WARN": "bold yellow", "FAIL": "bold red"}


def table(rows: list[Check], title: str) -> Table:
    """check | status (coloured) | detail | fix. Cells are plain text: a fix such as
    ``allow = ["10.0.0.0/8"]`` must not be read as rich markup."""
    counts = {s: sum(r.status == s for r in rows) for s in STYLE}
    caption = ", ".join(f"{n} {s}" for s, n in counts.items())
    out = Table(title=title, caption=caption, show_lines=True)
    out.add_column("check", no_wrap=True)
    out.add_column("status", no_wrap=True)
    out.add_column("detail", overflow="fold")
    out.add_column("fix", overflow="fold")
    for row in rows:
        out.add_row(row.check, Text(row.status, style=STYLE[row.status]), Text(row.detail),
                    Text(row.fix))  # fmt: skip
    return out


def as_json(rows: list[Check]) -> str:
    return json.dumps([row.as_dict() for row in rows], indent=2, ensure_ascii=False)
