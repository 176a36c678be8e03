"""The audit trail of real use: one record per event, from the API and the worker processes at
once, a chain that verifies, nothing secret in it; and fail-closed when it cannot be written."""

from __future__ import annotations

import collections
import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hushscribe.audit.verify import verify
from hushscribe.errors import AuditUnavailable
from tests.e2e.test_access import PASSWORDS, World
from tests.service import ADMIN_PASSWORD, Service, service_data_dir
from tests.speech import clip
from tests.tmpfs import fill, small_tmpfs

JFK = "jfk.flac"


def _records(audit_dir: Path) -> list[dict[str, Any]]:
    found = []
    for path in sorted(audit_dir.glob("audit-*.jsonl")):
        found += [json.loads(line) for line in path.read_text().splitlines() if line]
    return found


def _wait_done(client: httpx.Client, job_id: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("done", "failed", "cancelled"):
            return dict(job)
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not end")


@pytest.mark.slow
def test_a_scripted_session_leaves_exactly_one_record_per_event(
    tmp_path: Path, data_dir: Path
) -> None:
    root = service_data_dir(tmp_path / "svc", data_dir / "models")
    svc = Service(root, env={"HUSHSCRIBE_JOBS__WORKERS": "2"}).start()
    secrets: list[str] = [ADMIN_PASSWORD, PASSWORDS["ursula"], "not her password 42"]
    jfk = clip(JFK).path
    try:
        with svc.admin() as admin:
            secrets.append(admin.cookies.get("hs_session") or "")
            r = admin.post(
                "/v1/users",
                json={"username": "ursula", "password": PASSWORDS["ursula"], "role": "user"},
            )
            assert r.status_code == 201, r.text
            made = admin.post("/v1/keys", json={"name": "ci", "user": "ursula"}).json()
            key = made["key"]
            secrets.append(key)
        bad = httpx.post(
            svc.url + "/v1/auth/login",
            json={"username": "ursula", "password": "not her password 42"},
        )
        assert bad.status_code == 401
        with svc.signed_in("ursula", PASSWORDS["ursula"]) as ursula:
            secrets.append(ursula.cookies.get("hs_session") or "")
            ids = []
            for _ in range(2):  # two jobs, done by the worker processes
                with jfk.open("rb") as fh:
                    r = ursula.post("/v1/jobs", files={"file": ("jfk.flac", fh)})
                assert r.status_code == 202, r.text
                ids.append(r.json()["id"])
            for job_id in ids:
                assert _wait_done(ursula, job_id)["status"] == "done"
            for fmt in ("txt", "srt"):
                assert ursula.get(f"/v1/jobs/{ids[0]}/result?format={fmt}").status_code == 200
            assert ursula.delete(f"/v1/jobs/{ids[0]}").status_code == 200
            assert ursula.get("/v1/users").status_code == 403  # denied: permission
            assert ursula.post("/v1/auth/logout").status_code == 204
        bearer = {"Authorization": f"Bearer {key}"}
        with jfk.open("rb") as fh:  # a synchronous call: upload, transcription, one read
            r = httpx.post(svc.url + "/v1/audio/transcriptions", headers=bearer,
                           files={"file": ("jfk.flac", fh)}, timeout=180)  # fmt: skip
        assert r.status_code == 200 and "ask not" in r.text.lower()
        assert httpx.get(svc.url + "/v1/jobs").status_code == 401  # denied: no credentials
        assert httpx.get(svc.url + f"/v1/jobs?api_key={key}").status_code == 401  # denied: URL
        with svc.admin() as admin:
            assert admin.delete(f"/v1/keys/{made['id']}").status_code == 200
    finally:
        assert svc.stop() == 0
    records = _records(root / "audit")
    counts = collections.Counter(r["type"] for r in records)
    counts.pop("checkpoint", None)
    assert dict(counts) == {
        "service_start": 1, "service_stop": 1,
        "login_ok": 3, "login_failed": 1, "logout": 1,
        "user_changed": 2, "key_created": 1, "key_revoked": 1,
        "upload": 3, "transcription_done": 3, "result_read": 3, "job_deleted": 1,
        "access_denied": 3,
    }, counts  # fmt: skip
    made = [(r["actor"]["user"], r["target"]) for r in records if r["type"] == "user_changed"]
    assert made == [("first-run", "admin"), ("admin", "ursula")]  # the first start's admin too
    key_made = next(r for r in records if r["type"] == "key_created")
    assert key_made["actor"]["user_id"] and key_made["actor"]["method"] == "session"
    # One gap-free sequence, written by the API and the workers both.
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    done = [r for r in records if r["type"] == "transcription_done"]
    assert {r["actor"]["method"] for r in done} == {"worker"}
    assert all(r["details"]["audio_sha256"] and r["details"]["model"] == "base" for r in done)
    assert all(r["details"]["language"] == "en" and r["details"]["duration_s"] > 10 for r in done)
    denied = sorted(r["details"]["by"] for r in records if r["type"] == "access_denied")
    assert denied == ["auth", "auth", "permission"]
    report = verify(root / "audit", hmac_key=root / "keys" / "audit-hmac.key")
    assert report.ok and report.damage is None, report
    # Nothing said and nothing secret is in the log.
    raw = b"".join(p.read_bytes() for p in (root / "audit").iterdir() if p.is_file())
    assert b"ask not what your country" not in raw.lower()
    assert b"americans" not in raw.lower()
    for secret in filter(None, secrets):
        assert secret.encode() not in raw, secret[:6]


def _refuses_everything(world: World) -> None:
    c = world.client()
    r = c.post("/v1/auth/login", json={"username": "ursula", "password": PASSWORDS["ursula"]})
    assert r.status_code == 503 and r.json()["error"]["code"] == "audit_unavailable"
    assert "set-cookie" not in r.headers  # no session without its record
    key = world.key("ursula")
    wav = clip(JFK).path.read_bytes()
    r = world.client(Authorization=f"Bearer {key}").post(
        "/v1/jobs", files={"file": ("jfk.flac", wav)}
    )
    assert r.status_code == 503 and r.json()["error"]["code"] == "audit_unavailable"
    assert world.app.state.queue.list(None) == []  # no job: nothing will be transcribed
    assert [p for p in world.settings.blobs_dir.iterdir() if p.is_file()] == []


def test_a_full_audit_disk_refuses_work_with_503(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "audit", "256k") as audit_dir:
        world = World(tmp_path, audit={"dir": str(audit_dir)})
        with world.client():
            filler = fill(audit_dir)
            with pytest.raises(AuditUnavailable):  # the last free bytes of the log's own page
                for _ in range(100):
                    world.app.state.auditor.event("settings_changed", None, changed=["x" * 200])
            _refuses_everything(world)
            filler.unlink()  # space again: work goes on, and the log still verifies
            assert world.session("ursula").get("/v1/jobs").status_code == 200
        report = verify(audit_dir)
        assert report.ok, report


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[Path]:
    """``path`` as a read-only mount (a bind mount of itself, remounted read-only)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_a_read_only_audit_dir_keeps_the_service_from_starting(tmp_path: Path) -> None:
    with _read_only(tmp_path / "audit") as audit_dir:
        world = World(tmp_path, audit={"dir": str(audit_dir)})
        refused = pytest.raises(AuditUnavailable, match="audit log cannot be written")
        with refused, world.client():
            pass
        assert not any(audit_dir.iterdir())


def test_fail_open_goes_on_when_told_to(tmp_path: Path) -> None:
    with _read_only(tmp_path / "audit") as audit_dir:
        world = World(tmp_path, audit={"dir": str(audit_dir), "fail_open": True})
        with world.client():
            assert world.session("ursula").get("/v1/jobs").status_code == 200


def test_what_an_operator_does_at_the_shell_is_on_record(tmp_path: Path) -> None:
    from tests.integration.test_cli_identity import BOB_PASSWORD, KEY_RE, cli, ok

    data = tmp_path / "data"
    ok(cli(data, "users", "add", "bob", "--password-stdin", stdin=BOB_PASSWORD + "\n"))
    key_id = KEY_RE.search(ok(cli(data, "keys", "create", "--user", "bob", "--name", "ci")).stdout)
    assert key_id is not None
    listed = json.loads(ok(cli(data, "keys", "list", "--json")).stdout)
    ok(cli(data, "keys", "revoke", listed[0]["id"]))
    ok(cli(data, "users", "disable", "bob"))
    ok(cli(data, "audit", "verify"))
    exported = ok(cli(data, "audit", "export", "--format", "jsonl")).stdout.splitlines()
    records = [r for r in _records(data / "audit") if r["type"] != "checkpoint"]
    assert [r["type"] for r in records] == [
        "user_changed", "key_created", "key_revoked", "user_changed", "audit_verified",
        "audit_exported",
    ]  # fmt: skip
    assert records[4]["details"]["ok"] is True
    assert records[5]["details"]["records"] == len(exported) >= 5
    assert {r["actor"]["method"] for r in records} == {"cli"}
    assert all(r["actor"]["user"].startswith("cli:") and r["address"] == "local" for r in records)
    assert records[0]["details"] == {"change": "created", "role": "user"}
    assert verify(data / "audit").ok
    assert BOB_PASSWORD.encode() not in b"".join(p.read_bytes() for p in (data / "audit").glob("*"))


def test_a_changed_setting_is_named_at_the_next_start_without_its_value(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from hushscribe.api import create_app
    from hushscribe.settings import load_settings

    data = tmp_path / "data"
    for extra in ({}, {}, {"jobs": {"queue_max": 7}, "auth": {"session_idle_s": 99}}):
        with TestClient(create_app(load_settings(None, data_dir=data, **extra))):
            pass
    records = _records(data / "audit")
    assert [r["type"] for r in records].count("service_start") == 3
    changed = [r for r in records if r["type"] == "settings_changed"]
    assert [r["details"]["changed"] for r in changed] == [["auth.session_idle_s", "jobs.queue_max"]]
    assert "99" not in json.dumps([r["details"] for r in changed])  # names, not values


def test_a_model_that_fails_verification_is_on_record(tmp_path: Path, data_dir: Path) -> None:
    from hushscribe.engine.store import ModelStore

    world = World(tmp_path)
    ModelStore(world.settings.models_dir).import_model(data_dir / "models" / "tiny.en", "victim")
    with world.client():
        admin = world.session("admin")
        assert admin.post("/v1/models/victim/verify").json()["ok"] is True
        blob = world.settings.models_dir / "victim" / "model.bin"
        with blob.open("r+b") as fh:  # one byte changed on disk
            first = fh.read(1)
            fh.seek(0)
            fh.write(bytes([first[0] ^ 0xFF]))
        answer = admin.post("/v1/models/victim/verify").json()
        assert answer["ok"] is False and "model.bin" in answer["problems"][0]
    failed = [r for r in _records(world.settings.audit_dir) if r["type"] == "model_verify_failed"]
    assert len(failed) == 1
    assert failed[0]["target"] == "victim" and failed[0]["actor"]["user"] == "admin"
    assert failed[0]["details"]["code"] == "model_checksum_mismatch"
