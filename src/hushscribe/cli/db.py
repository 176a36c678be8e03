"""``hushscribe db …``: the database schema's revision — upgrade it, show it, list them all.

SQLite databases are upgraded by the server itself when it starts; PostgreSQL ones (shared by
several nodes) only here, once per release, before the new nodes start (``database_auto_upgrade``).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from sqlalchemy import Engine, make_url

from hushscribe import schema
from hushscribe.cli.common import console, err_console, state
from hushscribe.db import connect_engine

app = typer.Typer(help="The database schema: upgrade, current, history.", no_args_is_help=True)


def _engine(ctx: typer.Context) -> Engine:
    url = state(ctx).settings.db_url
    shown = make_url(url).render_as_string(hide_password=True)
    err_console.print(f"[dim]database {escape(shown)}[/]", highlight=False, soft_wrap=True)
    return connect_engine(url)


def _describe(revision: str | None, legacy: bool) -> str:
    if revision is not None:
        return revision
    return "unversioned (the previous release's schema)" if legacy else "empty"


@app.command("upgrade")
def upgrade_cmd(ctx: typer.Context) -> None:
    """Upgrade the schema to the revision this hushscribe needs (every step in one transaction)."""
    engine = _engine(ctx)
    try:
        before = schema.current(engine)
        head = schema.head()
        if before == head:
            console.print(f"schema at {head} (head): nothing to do", highlight=False)
            return
        if before is not None and before not in {r.id for r in schema.history()}:
            schema.check(engine)  # a newer release's revision: refused, with what to do
        legacy = before is None and schema.has_tables(engine)
        console.print(f"upgrading {_describe(before, legacy)} → {head}", highlight=False)

        def step(s: schema.Step) -> None:
            console.print(
                f"  {s.source or 'base'} → {s.target}  [dim]{escape(s.doc)}[/]",
                highlight=False,
                soft_wrap=True,
            )

        done = schema.upgrade(engine, on_step=step)
    finally:
        engine.dispose()
    if done.adopted:
        console.print("the previous release's tables and rows were kept as they were")
    console.print(
        f"[green]upgraded[/] {_describe(done.before, done.adopted)} → {done.after} (head)",
        highlight=False,
    )


@app.command("current")
def current_cmd(
    ctx: typer.Context,
    check: Annotated[
        bool, typer.Option("--check", help="Exit with code 1 unless the schema is at head.")
    ] = False,
) -> None:
    """Show the database's schema revision, and whether it is the one this hushscribe needs."""
    engine = _engine(ctx)
    try:
        revision = schema.current(engine)
        legacy = revision is None and schema.has_tables(engine)
    finally:
        engine.dispose()
    head = schema.head()
    if revision == head:
        console.print(f"{head} (head)", highlight=False)
        return
    if revision is None or revision in {r.id for r in schema.history()}:
        why = f"this hushscribe needs {head}: run `{schema.UPGRADE_COMMAND}`"
    else:
        why = f"unknown to this hushscribe, which needs {head}: a newer release upgraded it"
    console.print(f"{_describe(revision, legacy)}; {why}", highlight=False, soft_wrap=True)
    if check:
        raise typer.Exit(1)


@app.command("history")
def history_cmd(ctx: typer.Context) -> None:
    """List every schema revision, oldest first, marking the database's and head."""
    engine = _engine(ctx)
    try:
        revision = schema.current(engine)
    finally:
        engine.dispose()
    head = schema.head()
    for r in schema.history():
        marks = ", ".join(
            m for m, on in (("head", r.id == head), ("current", r.id == revision)) if on
        )
        console.print(
            f"{r.down or 'base'} → {r.id}{f' ({marks})' if marks else ''}  [dim]{escape(r.doc)}[/]",
            highlight=False,
            soft_wrap=True,
        )
