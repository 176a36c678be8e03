"""``GET /v1/audit`` and ``POST /v1/audit/verify``: who may read the log, filters, time spans and
cursor paging (in-process, the app with its users and sessions; no workers).

The filter tests read a log laid out in the log's file format (``write_log``) by an app whose own
log is off, so the records are known exactly; the verify test reads what the app itself wrote.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hushscribe.audit import read
from tests.e2e.test_access import World
from tests.integration.test_audit_cli import STEP, T0, make_records, write_log

RECORDS = make_records(260)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path, audit={"enabled": False})
    write_log(w.settings.audit_dir, RECORDS, per_file=40, torn='{"seq":261,')
    with w.client():
        yield w


def _all(client: TestClient, limit: int = 1000, **query: Any) -> list[dict[str, Any]]:
    """Every record the query matches, page by page with the cursor."""
    out: list[dict[str, Any]] = []
    after = None
    for _ in range(1000):
        params = {**query, "limit": limit, **({"after": after} if after is not None else {})}
        r = client.get("/v1/audit", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        assert page["object"] == "list" and len(page["data"]) <= limit
        out += page["data"]
        if page["data"]:
            assert page["last_seq"] == page["data"][-1]["seq"]
        if not page["has_more"]:
            return out
        assert len(page["data"]) == limit
        after = page["last_seq"]
    raise AssertionError("paging did not end")


def test_auditor_and_admin_read_the_log(world: World) -> None:
    for client in (world.session("audrey"), world.bearer("admin"), world.bearer("audrey")):
        r = client.get("/v1/audit")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "list" and body["has_more"] is True
        assert body["data"] == RECORDS[:100]  # oldest first, as logged, the torn line left out
        assert body["last_seq"] == 100
    assert _all(world.session("audrey")) == RECORDS


def test_filters(world: World) -> None:
    c = world.session("audrey")
    got = _all(c, actor="ursula")
    assert got and got == [r for r in RECORDS if r["actor"]["user"] == "ursula"]
    got = _all(c, action="login", outcome="denied")
    assert got and got == [r for r in RECORDS if r["type"] == "login_failed"]
    got = _all(c, type="transcription_failed", actor="ursula")
    want = [r for r in RECORDS if r["type"] == "transcription_failed"
            and r["actor"]["user"] == "ursula"]  # fmt: skip
    assert got == want and want
    assert _all(c, actor="service") == [r for r in RECORDS if r["actor"]["user"] is None]
    assert _all(c, actor="nobody") == []
    since, until = T0 + STEP * 30, T0 + STEP * 90
    got = _all(c, since=since.isoformat(), until=until.strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert got == RECORDS[30:90]
    # Another offset is the same instant.
    local = (T0 + STEP * 30).strftime("%Y-%m-%dT%H:%M:%S.%f") + "+00:00"
    assert _all(c, since=local.replace("+00:00", "Z")) == _all(c, since=local) == RECORDS[30:]
    both = _all(c, since=since.isoformat(), actor="audrey", outcome="ok")
    assert both == [r for r in RECORDS[30:] if r["actor"]["user"] == "audrey"
                    and r["outcome"] == "ok"]  # fmt: skip


def test_cursor_paging_has_no_duplicates_or_gaps(world: World) -> None:
    c = world.bearer("audrey")
    for limit in (1, 7, 40, 100):
        got = _all(c, limit=limit, actor="audrey")
        assert got == [r for r in RECORDS if r["actor"]["user"] == "audrey"], limit
    pages = _all(c, limit=13)
    seqs = [r["seq"] for r in pages]
    assert seqs == list(range(1, 261))
    r = c.get("/v1/audit", params={"after": 260}).json()
    assert r == {"object": "list", "data": [], "has_more": False, "last_seq": 260}
    r = c.get("/v1/audit", params={"after": 250, "limit": 10}).json()
    assert [x["seq"] for x in r["data"]] == list(range(251, 261)) and r["has_more"] is False


def test_bad_queries_are_400_with_a_reason(world: World) -> None:
    c = world.session("audrey")
    for params, word in (
        ({"since": "yesterday"}, "since"),
        ({"until": "2025-03-01T25:00:00Z"}, "until"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"after": "x"}, "after"),
    ):
        r = c.get("/v1/audit", params=params)
        assert r.status_code == 400, (params, r.text)
        assert word in r.json()["error"]["message"], r.text


def test_who_may_not(world: World) -> None:
    assert world.client().get("/v1/audit").status_code == 401
    assert world.client().post("/v1/audit/verify").status_code == 401
    ursula = world.session("ursula")
    assert ursula.get("/v1/audit").status_code == 403
    assert ursula.post("/v1/audit/verify").status_code == 403
    assert world.bearer("ursula").get("/v1/audit", params={"actor": "ursula"}).status_code == 403
    # An admin key without audit:read is refused too.
    assert world.bearer("admin", ["admin"]).get("/v1/audit").status_code == 403


def test_verify_what_the_app_wrote(tmp_path: Path) -> None:
    w = World(tmp_path)  # the app's own log, on
    with w.client():
        audrey = w.session("audrey")
        for _ in range(3):
            assert w.session("admin").get("/v1/users").status_code == 200
        assert w.session("ursula").get("/v1/users").status_code == 403
        records = _all(audrey)
        assert {"login_ok", "access_denied"} <= {r["type"] for r in records}
        denied = _all(audrey, type="access_denied", actor="ursula")
        assert denied and all(r["outcome"] == "denied" for r in denied)
        r = audrey.post("/v1/audit/verify")
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["ok"] is True and report["damage"] is None, report
        assert report["records"] >= len(records) and report["files"] >= 1
        assert report["first_time"] and report["last_time"]
        assert isinstance(report["warnings"], list)
        # The check itself is recorded, after what it checked.
        (done,) = _all(audrey, type="audit_verified")
        assert done["actor"]["user"] == "audrey" and done["outcome"] == "ok"
        assert done["details"] == {"records": report["records"], "ok": True}
        assert done["seq"] > report["head_seq"] and done["seq"] == read.head_seq(
            w.settings.audit_dir
        )
