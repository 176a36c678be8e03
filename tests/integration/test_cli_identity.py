"""``hushscribe users …`` and ``hushscribe keys …`` as an operator runs them: real processes on a
real database, checked by what they print and by signing in with what they made (in-process,
through the same stores and sign-in the server uses)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hushscribe.db import make_engine
from hushscribe.errors import InvalidCredentials
from hushscribe.security.keys import KeyStore
from hushscribe.security.principal import SCOPES
from hushscribe.security.signin import SignIn
from hushscribe.security.users import UserStore
from hushscribe.settings import load_settings

CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("HUSHSCRIBE_")}
BOB_PASSWORD = "bob's first passphrase 42"
KEY_RE = re.compile(r"hs_[A-Za-z0-9_-]{43,}")


def cli(data_dir: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hushscribe", "--data-dir", str(data_dir), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**CLEAN_ENV, "COLUMNS": "200"},
    )


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, f"{done.args}: {done.stdout}\n{done.stderr}"
    return done


def refused(done: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 2 with one readable error line naming ``words``; returns that line, unwrapped."""
    message = " ".join(done.stderr.split())
    assert done.returncode == 2, f"{done.args}: rc={done.returncode}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    assert message.startswith("error ("), message
    for word in words:
        assert word in message, message
    return message


def listed(data_dir: Path, what: str) -> list[dict[str, Any]]:
    found = json.loads(ok(cli(data_dir, what, "list", "--json")).stdout)
    assert isinstance(found, list)
    return found


def add_bob(data_dir: Path, role: str = "user") -> None:
    ok(cli(data_dir, "users", "add", "bob", "--role", role, "--password-stdin", stdin=BOB_PASSWORD))


def stores(data_dir: Path) -> tuple[UserStore, KeyStore, SignIn]:
    settings = load_settings(None, data_dir=data_dir)
    engine = make_engine(settings.db_url)
    users = UserStore(engine)
    return users, KeyStore(engine), SignIn(users, settings.auth)


def signs_in(data_dir: Path, username: str, password: str) -> bool:
    users, _keys, signin = stores(data_dir)
    try:
        user, method = signin.authenticate(username, password, "127.0.0.1")
    except InvalidCredentials:
        return False
    finally:
        users.engine.dispose()
    assert (user.username, method) == (username, "local")
    return True


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A data directory that exists (as the packages and ``make serve`` leave it)."""
    root = tmp_path / "data"
    root.mkdir(mode=0o700)
    return root


def test_the_first_command_on_a_new_data_dir_creates_it(tmp_path: Path) -> None:
    fresh = tmp_path / "new" / "data"
    done = cli(fresh, "users", "add", "bob", "--password-stdin", stdin=BOB_PASSWORD)
    assert "Traceback" not in done.stderr, done.stderr
    ok(done)
    assert (fresh / "hushscribe.db").is_file()
    assert fresh.stat().st_mode & 0o777 == 0o700  # as the server makes it: owner only
    assert [u["username"] for u in listed(fresh, "users")] == ["bob"]


def test_add_a_user_and_the_refusals(home: Path) -> None:
    done = ok(cli(home, "users", "add", "Bob", "--role", "user", "--password-stdin",
                  stdin=BOB_PASSWORD + "\n"))  # fmt: skip
    assert done.stdout == ""  # a password given is never echoed
    assert BOB_PASSWORD not in done.stderr
    assert "added bob (user)" in done.stderr
    [bob] = listed(home, "users")
    assert {k: bob[k] for k in ("username", "role", "source", "disabled", "last_login_at")} == {
        "username": "bob", "role": "user", "source": "local", "disabled": False,
        "last_login_at": None,
    }  # fmt: skip
    assert re.fullmatch(r"[0-9a-f]{32}", bob["id"])
    assert abs(bob["created_at"] - time.time()) < 120
    assert signs_in(home, "bob", BOB_PASSWORD)  # the trailing newline was not part of it

    again = cli(home, "users", "add", "bob", "--password-stdin", stdin="another passphrase 99")
    refused(again, "user_exists", "'bob'")
    short = cli(home, "users", "add", "erin", "--password-stdin", stdin="Sh0rt-pass")
    refused(short, "at least 12 characters")
    role = cli(home, "users", "add", "erin", "--role", "root", "--password-stdin",
               stdin="a long enough passphrase")  # fmt: skip
    refused(role, "'root'", "admin", "user", "auditor")
    for name in ("bad name", "../x"):
        bad = cli(home, "users", "add", name, "--password-stdin", stdin="a long enough passphrase")
        refused(bad, "invalid user name")
    assert [u["username"] for u in listed(home, "users")] == ["bob"]  # none of those was made
    assert signs_in(home, "bob", BOB_PASSWORD)  # and bob is as he was


def test_a_generated_password_is_printed_once_and_signs_in(home: Path) -> None:
    done = ok(cli(home, "users", "add", "carol", "--generate"))
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout  # alone on standard output, on its own line
    password = lines[0]
    assert re.fullmatch(r"[A-Za-z0-9_-]{24}", password), password
    assert password not in done.stderr
    assert "shown once" in done.stderr
    assert signs_in(home, "carol", password)
    assert not signs_in(home, "carol", password[:-1])
    [carol] = listed(home, "users")
    assert (carol["username"], carol["role"], carol["disabled"]) == ("carol", "user", False)
    assert carol["last_login_at"] is not None  # the sign-in above was recorded
    # Another --generate makes another password.
    other = ok(cli(home, "users", "add", "dora", "--generate")).stdout.strip()
    assert other != password and signs_in(home, "dora", other)


def test_disable_enable_role_and_passwd(home: Path) -> None:
    add_bob(home)
    users, _keys, _signin = stores(home)
    try:
        bob = users.named("bob")
        session = users.start_session(bob, "local", 3600)
        assert users.session_principal(session, 3600) is not None

        done = ok(cli(home, "users", "disable", "bob"))
        assert "bob: user, disabled" in done.stderr
        assert listed(home, "users")[0]["disabled"] is True
        assert users.session_principal(session, 3600) is None  # ended at once
        assert not signs_in(home, "bob", BOB_PASSWORD)  # a disabled user cannot sign in

        ok(cli(home, "users", "enable", "bob"))
        assert users.named("bob").disabled is False
        assert users.session_principal(session, 3600) is None  # enabling revives nothing
        assert signs_in(home, "bob", BOB_PASSWORD)

        ok(cli(home, "users", "role", "bob", "auditor"))
        assert listed(home, "users")[0]["role"] == "auditor"
        refused(cli(home, "users", "disable", "nobody"), "user_not_found", "nobody")

        session = users.start_session(users.named("bob"), "local", 3600)
        principal = users.session_principal(session, 3600)
        assert principal is not None and principal.role == "auditor"
        new = "bob's second passphrase 77"
        done = ok(cli(home, "users", "passwd", "bob", "--password-stdin", stdin=new))
        assert done.stdout == "" and new not in done.stderr
        assert not signs_in(home, "bob", BOB_PASSWORD)
        assert signs_in(home, "bob", new)
        assert users.session_principal(session, 3600) is None  # signed out everywhere
        # A short new password is refused and the current one stays.
        refused(cli(home, "users", "passwd", "bob", "--password-stdin", stdin="tiny"), "12")
        assert signs_in(home, "bob", new)
    finally:
        users.engine.dispose()


def test_create_list_and_revoke_a_key(home: Path) -> None:
    add_bob(home)
    done = ok(cli(home, "keys", "create", "--user", "bob", "--name", "ci",
                  "--scopes", "transcribe", "--expires", "90d"))  # fmt: skip
    assert done.stdout.count("\n") == 1, done.stdout  # exactly one line: the key
    key = done.stdout.strip()
    assert KEY_RE.fullmatch(key), key
    notice = " ".join(done.stderr.split())
    key_id = re.search(r"key (key_[0-9a-f]{16}) for bob", notice)
    assert key_id, notice
    assert "shown once" in notice and key not in done.stderr

    listing = cli(home, "keys", "list", "--json")
    table = cli(home, "keys", "list")
    for out in (listing, table):
        assert key not in out.stdout + out.stderr  # never the key itself
        assert key[len("hs_") + 6 :] not in out.stdout + out.stderr
    [made] = json.loads(ok(listing).stdout)
    assert made["id"] == key_id.group(1) and key_id.group(1) in table.stdout
    assert (made["user"], made["name"], made["state"]) == ("bob", "ci", "active")
    assert made["prefix"] == key[:9] and made["scopes"] == ["transcribe"]
    assert made["expires_at"] - made["created_at"] == pytest.approx(90 * 86400, abs=2)
    assert "key" not in made

    users, keys, _signin = stores(home)
    try:
        principal = keys.principal(key)
        assert principal is not None
        assert (principal.username, principal.key_id) == ("bob", made["id"])
        assert principal.scopes == frozenset({"transcribe"})  # not all a user's role grants
        assert keys.principal(key[:-1] + ("A" if key[-1] != "A" else "B")) is None

        done = ok(cli(home, "keys", "revoke", made["id"]))
        assert f"revoked {made['id']}" in done.stderr
        [after] = listed(home, "keys")
        assert after["state"] == "revoked"
        assert keys.principal(key) is None  # refused at its next use
        refused(cli(home, "keys", "revoke", "key_0000000000000000"), "key_not_found")
    finally:
        users.engine.dispose()


def test_key_refusals(home: Path) -> None:
    add_bob(home, role="auditor")
    auditor = cli(home, "keys", "create", "--user", "bob", "--name", "ci", "--scopes", "transcribe")
    refused(auditor, "auditor", "'transcribe'")
    assert auditor.stdout == ""
    unknown = cli(home, "keys", "create", "--user", "bob", "--name", "ci", "--scopes", "root")
    refused(unknown, "'root'", *SCOPES)
    for expires in ("soon", "0d"):
        bad = cli(home, "keys", "create", "--user", "bob", "--name", "ci", "--expires", expires)
        refused(bad, "invalid duration", "90d")
        assert bad.stdout == ""
    refused(cli(home, "keys", "create", "--user", "nobody", "--name", "ci"), "user_not_found")
    assert listed(home, "keys") == []  # nothing was made by any of them
    # What the auditor may hold, it gets (the default: all its role grants).
    done = ok(cli(home, "keys", "create", "--user", "bob", "--name", "audit"))
    assert KEY_RE.fullmatch(done.stdout.strip())
    assert [k["scopes"] for k in listed(home, "keys")] == [["audit:read"]]


def test_help_lists_every_subcommand(home: Path) -> None:
    for group, commands in (
        ("users", ("add", "list", "disable", "enable", "passwd", "role")),
        ("keys", ("create", "list", "revoke")),
    ):
        out = ok(cli(home, group, "--help")).stdout
        shown = set(re.findall(r"^\W*([a-z]+)\s{2,}\S", out, flags=re.MULTILINE))
        assert set(commands) <= shown, out
