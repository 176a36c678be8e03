"""No secret at rest in plain text: after a real server has seen passwords (right and wrong), an
API key and session ids, none of them is in any file it leaves behind (the database with its WAL,
its log) in any usual encoding; what the database holds instead is an argon2id hash per password
and a SHA-256 per key and session."""

from __future__ import annotations

import base64
import hashlib
import re
import sqlite3
from pathlib import Path

import httpx

from tests.service import ADMIN_PASSWORD, Service, service_data_dir

DAVE_PASSWORD = "dave-Secret-Passphrase-4711"
WRONG_PASSWORD = "dave-Wrong-Guess-0815"
MARKER_PASSWORD = "Zq7-MARKER-xyzzy-plugh-93"


def forms(secret: str) -> dict[str, bytes]:
    """The ways a secret could be written down: as given, base64 (either alphabet), hex, and for
    URL-safe base64 tokens (keys, session ids) the random bytes they encode."""
    raw = secret.encode()
    out = {
        "raw": raw,
        "utf-16": secret.encode("utf-16-le"),
        "base64": base64.b64encode(raw).rstrip(b"="),
        "base64url": base64.urlsafe_b64encode(raw).rstrip(b"="),
        "hex": raw.hex().encode(),
        "HEX": raw.hex().upper().encode(),
    }
    body = secret.removeprefix("hs_")
    if re.fullmatch(r"[A-Za-z0-9_-]{43}", body):
        random = base64.urlsafe_b64decode(body + "=")
        out |= {
            "bytes": random,
            "bytes-hex": random.hex().encode(),
            "bytes-base64": base64.b64encode(random).rstrip(b"="),
        }
    return out


def test_no_password_key_or_session_id_is_stored_or_logged(tmp_path: Path) -> None:
    root = service_data_dir(tmp_path / "data", None)
    # At serve's own default log level (info: the access log too), not the tests' quieter one.
    svc = Service(root, serve_args=["--log-level", "info"]).start(wait_ready=False)
    clients: list[httpx.Client] = []
    try:
        admin = svc.admin()
        clients.append(admin)
        r = admin.post(
            "/v1/users", json={"username": "dave", "password": DAVE_PASSWORD, "role": "user"}
        )
        assert r.status_code == 201, r.text
        dave = svc.signed_in("dave", DAVE_PASSWORD)
        clients.append(dave)
        assert dave.get("/v1/auth/session").json()["user"]["username"] == "dave"

        r = admin.post("/v1/keys", json={"name": "scripts"})
        assert r.status_code == 201, r.text
        key = r.json()["key"]
        key_id = r.json()["id"]
        assert key.startswith("hs_")
        r = httpx.get(
            svc.url + "/v1/auth/session", headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        assert r.status_code == 200 and r.json()["user"]["auth"] == "key", r.text

        for password in (WRONG_PASSWORD, MARKER_PASSWORD):
            r = httpx.post(
                svc.url + "/v1/auth/login",
                json={"username": "dave", "password": password},
                timeout=30,
            )
            assert r.status_code == 401, r.text
        r = httpx.post(  # the marker also as a form, and for a user that does not exist
            svc.url + "/v1/auth/login",
            data={"username": "nobody", "password": MARKER_PASSWORD},
            timeout=30,
        )
        assert r.status_code == 401, r.text

        sessions = {
            name: client.cookies["hs_session"]
            for name, client in (("admin", admin), ("dave", dave))
        }
        assert len(set(sessions.values())) == 2
    finally:
        for client in clients:
            client.close()
        assert svc.stop() == 0

    secrets = {
        "admin password": ADMIN_PASSWORD,
        "dave's password": DAVE_PASSWORD,
        "wrong password": WRONG_PASSWORD,
        "marker password": MARKER_PASSWORD,
        "API key": key,
        "admin session": sessions["admin"],
        "dave session": sessions["dave"],
    }
    files = [p for p in root.rglob("*") if p.is_file()]
    assert root / "hushscribe.db" in files and svc.log_path in files  # the log is scanned too
    log = svc.log_path.read_text()
    assert '"POST /v1/keys HTTP/1.1" 201' in log  # it logged the requests, and
    assert log.count('"outcome": "denied_auth"') == 3, log  # each failed sign-in
    found = [
        f"{what} ({form}) in {path.relative_to(root)}"
        for path in files
        for what, secret in secrets.items()
        for form, needle in forms(secret).items()
        if needle in path.read_bytes()
    ]
    assert found == []

    # What is there instead: a slow, salted hash per password, a digest per key and session.
    with sqlite3.connect(root / "hushscribe.db") as db:
        hashes = dict(db.execute("SELECT username, password_hash FROM users").fetchall())
        key_rows = db.execute("SELECT id, key_hash, prefix FROM api_keys").fetchall()
        session_hashes = {row[0] for row in db.execute("SELECT id_hash FROM sessions")}
    assert sorted(hashes) == ["admin", "dave"]
    for name, stored in hashes.items():
        assert stored.startswith("$argon2id$v=19$"), (name, stored)
    assert hashes["admin"] != hashes["dave"]
    assert [row[0] for row in key_rows] == [key_id]
    [(_id, key_hash, prefix)] = key_rows
    assert re.fullmatch(r"[0-9a-f]{64}", key_hash)
    assert key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert prefix == key[:9] and len(prefix) < len(key) // 4  # enough to recognise, not to use
    assert session_hashes == {hashlib.sha256(s.encode()).hexdigest() for s in sessions.values()}
