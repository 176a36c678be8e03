"""``hushscribe users …`` and ``hushscribe keys …``: people and their API keys, from the shell.

These act on the database directly (as the operator who can read it), and each change is an
access decision recorded with the operator's login name as its actor.
"""

from __future__ import annotations

import getpass
import json
import sys
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from hushscribe.cli.common import auditor, console, err_console, state
from hushscribe.db import make_engine
from hushscribe.errors import InvalidRequest
from hushscribe.security.decisions import Decision, record
from hushscribe.security.keys import KeyStore, parse_duration
from hushscribe.security.passwords import new_secret
from hushscribe.security.principal import SCOPES
from hushscribe.security.users import UserStore, check_password

users_app = typer.Typer(help="Manage users (local and directory).", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys (shown once, stored hashed).", no_args_is_help=True)


def _users(ctx: typer.Context) -> UserStore:
    auditor(ctx)  # this command's decisions go to the service's audit log
    settings = state(ctx).settings
    return UserStore(
        make_engine(settings.db_url, upgrade=settings.database_auto_upgrade), settings.auth
    )


def _keys(ctx: typer.Context) -> KeyStore:
    auditor(ctx)
    return KeyStore(
        make_engine(state(ctx).settings.db_url, upgrade=state(ctx).settings.database_auto_upgrade)
    )


def _operator() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _audit(action: str, target: str, **details: object) -> None:
    record(Decision(action, "ok", "local", _operator(), "cli", target, dict(details)))


def _when(t: float | None) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M") if t else "-"


def _new_password(stdin: bool, generate: bool) -> tuple[str, bool]:
    """``(password, generated)`` from stdin, a fresh random one, or typed twice at a prompt."""
    if generate and stdin:
        raise InvalidRequest("choose --generate or --password-stdin, not both")
    if generate:
        return new_secret()[:24], True
    if stdin:
        return check_password(sys.stdin.readline().rstrip("\r\n")), False
    password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return check_password(password), False


PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from standard input.")
]
Generate = Annotated[
    bool, typer.Option("--generate", help="Make a random password and print it once.")
]


@users_app.command("add")
def add(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(help="Letters, digits and . _ @ -")],
    role: Annotated[str, typer.Option(help="admin, user or auditor.")] = "user",
    password_stdin: PasswordStdin = False,
    generate: Generate = False,
) -> None:
    """Add a local user (asks for the password unless told otherwise)."""
    password, generated = _new_password(password_stdin, generate)
    user = _users(ctx).add(username, password, role)
    _audit("user_changed", user.username, change="created", role=user.role)
    err_console.print(f"added {user.username} ({user.role})")
    if generated:
        err_console.print("password (shown once):")
        print(password)


@users_app.command("list")
def list_users(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List users."""
    found = _users(ctx).list()
    if as_json:
        console.print_json(json.dumps([u.view() for u in found]))
        return
    table = Table()
    for col in ("user", "role", "source", "state", "created", "last sign-in"):
        table.add_column(col)
    for u in found:
        state_ = "disabled" if u.disabled else "enabled"
        table.add_row(
            u.username, u.role, u.source, state_, _when(u.created_at), _when(u.last_login_at)
        )
    console.print(table)


def _set(ctx: typer.Context, username: str, **change: object) -> None:
    store = _users(ctx)
    user = store.named(username)
    if "disabled" in change:
        user = store.set_disabled(user.id, bool(change["disabled"]))
    if "role" in change:
        user = store.set_role(user.id, str(change["role"]))
    _audit("user_changed", user.username, **change)
    err_console.print(f"{user.username}: {user.role}, {'disabled' if user.disabled else 'enabled'}")


@users_app.command("disable")
def disable(ctx: typer.Context, username: str) -> None:
    """Disable a user: their sessions end and their keys stop working at once."""
    _set(ctx, username, disabled=True)


@users_app.command("enable")
def enable(ctx: typer.Context, username: str) -> None:
    """Enable a disabled user."""
    _set(ctx, username, disabled=False)


@users_app.command("role")
def role(ctx: typer.Context, username: str, new_role: Annotated[str, typer.Argument()]) -> None:
    """Give a user another role (admin, user, auditor)."""
    _set(ctx, username, role=new_role)


@users_app.command("passwd")
def passwd(
    ctx: typer.Context,
    username: str,
    password_stdin: PasswordStdin = False,
    generate: Generate = False,
) -> None:
    """Set a local user's password; their sessions end."""
    store = _users(ctx)
    user = store.named(username)
    password, generated = _new_password(password_stdin, generate)
    store.set_password(user.id, password)
    _audit("user_changed", user.username, credential_reset=True)
    err_console.print(f"password of {user.username} changed; their sessions were ended")
    if generated:
        err_console.print("password (shown once):")
        print(password)


@keys_app.command("create")
def create(
    ctx: typer.Context,
    user: Annotated[str, typer.Option("--user", help="Whose key it is.")],
    name: Annotated[str, typer.Option("--name", help="A label: what or who uses it.")],
    scopes: Annotated[
        str | None,
        typer.Option(help=f"Comma-separated, from {', '.join(SCOPES)}; default: all the role has."),
    ] = None,
    expires: Annotated[str | None, typer.Option(help="e.g. 90d, 12h (default: never).")] = None,
) -> None:
    """Create an API key. The key is printed once, alone on standard output."""
    owner = _users(ctx).named(user)
    if owner.disabled:
        raise InvalidRequest(f"{owner.username} is disabled")
    wanted = [s.strip() for s in scopes.split(",") if s.strip()] if scopes else None
    ttl = parse_duration(expires) if expires else None
    key, made = _keys(ctx).create(owner.id, owner.role, name, wanted, ttl)
    _audit("key_created", made.id, owner=owner.username, scopes=made.scopes)
    err_console.print(
        f"key {made.id} for {owner.username} ({', '.join(made.scopes)}; expires "
        f"{_when(made.expires_at) if made.expires_at else 'never'}) — shown once, store it now:"
    )
    print(key)


@keys_app.command("list")
def list_keys(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option(help="Only this user's keys.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List API keys (never the keys themselves: they are not stored)."""
    owner = _users(ctx).named(user).id if user else None
    found = _keys(ctx).list(owner)
    if as_json:
        console.print_json(json.dumps([k.view() for k in found]))
        return
    table = Table()
    for col in ("id", "user", "name", "starts", "scopes", "state", "expires", "last used"):
        table.add_column(col)
    for k in found:
        v = k.view()
        table.add_row(
            k.id, k.username, k.name, k.prefix + "…", ",".join(k.scopes), v["state"],
            _when(k.expires_at), _when(k.last_used_at),
        )  # fmt: skip
    console.print(table)


@keys_app.command("revoke")
def revoke(ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="key_… id")]) -> None:
    """Revoke a key: refused at its next request, on every node."""
    revoked = _keys(ctx).revoke(key_id, None)
    _audit("key_revoked", revoked.id, owner=revoked.username)
    err_console.print(f"revoked {revoked.id} ({revoked.name}, {revoked.username})")
