"""The first start of a real ``hushscribe serve`` on an empty database: the ``admin`` it creates,
the password and API key it prints once (and never again), and the password it refuses."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import httpx
import pytest

from tests.service import Service, service_data_dir

RANDOM_PASSWORD_RE = re.compile(r"password: ([A-Za-z0-9_-]{24})\s")
KEY_RE = re.compile(r"hs_[A-Za-z0-9_-]{43,}")
ENV_PASSWORD = "an operator's own passphrase 19"


def full_log(svc: Service) -> str:
    assert svc.log_path is not None
    return svc.log_path.read_text(errors="replace")


def login(svc: Service, username: str, password: str) -> httpx.Response:
    return httpx.post(
        svc.url + "/v1/auth/login", json={"username": username, "password": password}, timeout=30
    )


def signs_in_as_admin(svc: Service, password: str) -> None:
    r = login(svc, "admin", password)
    assert r.status_code == 200, r.text
    assert r.json()["user"] | {"id": None} == {
        "id": None,
        "username": "admin",
        "role": "admin",
        "auth": "local",
    }
    assert r.cookies.get("hs_session")


def whoami(svc: Service, key: str) -> httpx.Response:
    return httpx.get(
        svc.url + "/v1/auth/session", headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def user_count(root: Path) -> int:
    with sqlite3.connect(root / "hushscribe.db") as db:
        return int(db.execute("SELECT count(*) FROM users").fetchone()[0])


def test_without_a_password_a_random_one_and_a_key_are_printed_once(tmp_path: Path) -> None:
    root = service_data_dir(tmp_path / "data", None)
    # An empty HUSHSCRIBE_ADMIN_PASSWORD means "not given" (a unit file with `Environment=...=`).
    first = Service(root, env={"HUSHSCRIBE_ADMIN_PASSWORD": ""}, serve_args=["--first-run-key"])
    try:
        first.start(wait_ready=False)
        log = full_log(first)
        assert "First start: created user admin (role admin)." in log, log
        [password] = RANDOM_PASSWORD_RE.findall(log)
        keys = KEY_RE.findall(log)
        assert len(keys) == 1, log
        [key] = keys
        assert log.count(password) == 1 and log.count(key) == 1, log
        assert "shown once" in log

        signs_in_as_admin(first, password)
        assert login(first, "admin", "").status_code == 401  # not a way in
        assert login(first, "admin", password[:-1]).status_code == 401
        r = whoami(first, key)
        assert r.status_code == 200, r.text
        assert r.json()["user"] | {"id": None} == {
            "id": None,
            "username": "admin",
            "role": "admin",
            "auth": "key",
        }
        assert "admin" in r.json()["scopes"]
    finally:
        assert first.stop() == 0
    assert user_count(root) == 1

    # Later starts print neither, even with --first-run-key, and ignore the variable.
    again = Service(
        root, env={"HUSHSCRIBE_ADMIN_PASSWORD": ENV_PASSWORD}, serve_args=["--first-run-key"]
    )
    try:
        again.start(wait_ready=False)
        log = full_log(again)
        assert again.log_path != first.log_path
        assert "First start" not in log and "password:" not in log, log
        assert password not in log and not KEY_RE.search(log), log
        signs_in_as_admin(again, password)
        assert login(again, "admin", ENV_PASSWORD).status_code == 401
        assert whoami(again, key).json()["user"]["username"] == "admin"
    finally:
        assert again.stop() == 0
    assert user_count(root) == 1


def test_the_password_from_the_environment_is_used_and_never_printed(tmp_path: Path) -> None:
    root = service_data_dir(tmp_path / "data", None)
    svc = Service(
        root, env={"HUSHSCRIBE_ADMIN_PASSWORD": ENV_PASSWORD}, serve_args=["--first-run-key"]
    )
    try:
        svc.start(wait_ready=False)
        log = full_log(svc)
        assert "First start: created user admin (role admin)." in log, log
        assert "password: the one in HUSHSCRIBE_ADMIN_PASSWORD" in log
        assert ENV_PASSWORD not in log and not RANDOM_PASSWORD_RE.search(log), log
        assert len(KEY_RE.findall(log)) == 1  # the key is still printed: it exists nowhere else
        signs_in_as_admin(svc, ENV_PASSWORD)
    finally:
        assert svc.stop() == 0


def test_a_too_short_password_from_the_environment_stops_the_start(tmp_path: Path) -> None:
    root = service_data_dir(tmp_path / "data", None)
    svc = Service(root, env={"HUSHSCRIBE_ADMIN_PASSWORD": "Sh0rt-pw"})
    try:
        with pytest.raises(RuntimeError, match=r"serve exited with [1-9]"):
            svc.start(wait_ready=False, timeout=60)
    finally:
        svc.stop()
    assert svc.proc is not None and svc.proc.returncode == 2
    log = " ".join(full_log(svc).split())
    assert "Traceback" not in log, log
    assert "at least 12 characters" in log, log
    assert "Sh0rt-pw" not in log  # the refused password is not echoed either
    assert "First start" not in log and "hushscribe on http" not in log
    assert user_count(root) == 0  # nothing half made: fixing the variable and starting again works
