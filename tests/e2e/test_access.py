"""Who may call what: the route table walked with no credentials and with each wrong scope,
principals and ownership, browser sessions and CSRF, keys that are revoked or expire, headers.

In-process (the app with its database, no workers): access is decided before any job runs.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import WebSocket
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from hushscribe.api import create_app
from hushscribe.api.access import POLICY, PUBLIC, PUBLIC_PATHS, SESSION_COOKIE
from hushscribe.api.headers import CSP
from hushscribe.security.keys import KeyStore
from hushscribe.security.principal import SCOPES
from hushscribe.security.users import UserStore
from hushscribe.settings import load_settings
from tests.e2e.test_api_limits import _api_routes
from tests.service import KEYS, LOOPBACK_CLIENT

PASSWORDS = {
    "admin": "admin's long password 1",
    "ursula": "ursula's long password 2",
    "victor": "victor's long password 3",
    "audrey": "audrey's long password 4",
}
ROLES = {"admin": "admin", "ursula": "user", "victor": "user", "audrey": "auditor"}


class World:
    def __init__(self, tmp_path: Path, **settings: Any) -> None:
        settings.setdefault("auth", {})
        settings["auth"].setdefault("api_keys", KEYS)
        self.settings = load_settings(None, data_dir=tmp_path / "data", **settings)
        self.app = create_app(self.settings, start_workers=False)
        self.users: UserStore = self.app.state.users
        self.keys: KeyStore = self.app.state.keys
        self.ids = {n: self.users.add(n, p, ROLES[n]).id for n, p in PASSWORDS.items()}
        self.db = self.settings.data_dir / "hushscribe.db"

    def client(self, **headers: str) -> TestClient:
        return TestClient(self.app, client=LOOPBACK_CLIENT, headers=headers)

    def key(self, user: str, scopes: list[str] | None = None) -> str:
        key, _ = self.keys.create(self.ids[user], ROLES[user], "test", scopes)
        return key

    def bearer(self, user: str, scopes: list[str] | None = None) -> TestClient:
        return self.client(Authorization=f"Bearer {self.key(user, scopes)}")

    def session(self, user: str) -> TestClient:
        c = self.client()
        r = c.post("/v1/auth/login", json={"username": user, "password": PASSWORDS[user]})
        assert r.status_code == 200, r.text
        c.headers["X-CSRF-Token"] = r.json()["csrf_token"]
        return c


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    with w.client():  # runs the lifespan once
        yield w


def _routes(app: Any) -> list[tuple[str, str]]:
    """(method, path template) of every route the app serves."""
    return sorted({(m, path) for path, methods in _api_routes(app) for m in methods})


def _concrete(template: str) -> str:
    while "{" in template:
        start, end = template.index("{"), template.index("}")
        template = template[:start] + "nope" + template[end + 1 :]
    return template


# --- the route table ---------------------------------------------------------------------------


def test_every_route_has_a_rule_and_only_the_listed_ones_are_public(world: World) -> None:
    routes = _routes(world.app)
    assert len(routes) >= 20, routes
    assert [r for r in routes if r not in POLICY] == []
    public = {path for (_, path), rule in POLICY.items() if rule == PUBLIC}
    assert public == {"/", "/healthz", "/readyz", "/v1/auth/login"} == set(PUBLIC_PATHS)


def test_every_route_answers_401_without_credentials(world: World) -> None:
    anonymous = world.client()
    bad = world.client(Authorization="Bearer hs_" + "A" * 43)
    checked = 0
    for method, template in _routes(world.app):
        if POLICY[(method, template)] == PUBLIC:
            continue
        for client in (anonymous, bad):
            r = client.request(method, _concrete(template))
            assert r.status_code == 401, (method, template, r.text)
            assert r.json()["error"]["type"] == "authentication_error"
        checked += 1
    assert checked >= 17


def test_every_scoped_route_answers_403_with_every_other_scope(world: World) -> None:
    """For each route that needs scope S: a key holding every scope but S gets 403 (an admin's
    key, so the role allows all the others), and a key with S gets past the check."""
    for method, template in _routes(world.app):
        rule = POLICY[(method, template)]
        if rule not in SCOPES:
            continue
        others = [s for s in SCOPES if s != rule]
        r = world.bearer("admin", others).request(method, _concrete(template))
        assert r.status_code == 403, (method, template, r.text)
        assert r.json()["error"]["code"] == "forbidden"
        r = world.bearer("admin", [rule]).request(method, _concrete(template))
        assert r.status_code != 403, (method, template, r.text)


def test_roles_grant_what_the_issue_says(world: World) -> None:
    user, auditor, admin = world.session("ursula"), world.session("audrey"), world.session("admin")
    assert user.get("/v1/jobs").status_code == 200
    assert user.get("/v1/users").status_code == 403
    assert user.get("/metrics").status_code == 403
    assert auditor.get("/v1/jobs").status_code == 403  # auditors do not read transcripts
    assert auditor.post("/v1/jobs").status_code == 403
    assert auditor.get("/v1/auth/session").json()["scopes"] == ["audit:read"]
    assert admin.get("/v1/users").status_code == 200
    assert admin.get("/metrics").status_code == 200
    assert admin.get("/v1/status").status_code == 200
    names = {u["username"]: u["role"] for u in admin.get("/v1/users").json()["data"]}
    assert names == ROLES


# --- credentials -------------------------------------------------------------------------------


def test_a_key_in_the_query_string_is_refused_even_when_valid(world: World) -> None:
    key = world.key("ursula")
    for name in ("api_key", "key", "access_token", "token"):
        r = world.client().get(f"/v1/jobs?{name}={key}")
        assert r.status_code == 401, name
        assert "URL" in r.json()["error"]["message"]
    r = world.client(Authorization=f"Bearer {key}").get(f"/v1/jobs?api_key={key}")
    assert r.status_code == 401  # not even with the header as well: the URL already leaked it


def test_a_revoked_key_fails_at_its_next_request_on_another_process(world: World) -> None:
    key = world.key("ursula")
    client = world.client(Authorization=f"Bearer {key}")
    assert client.get("/v1/jobs").status_code == 200
    # Another process (a second API node) revokes it, through its own database connection.
    key_id = world.keys.list(world.ids["ursula"])[0].id
    KeyStore(create_app(world.settings, start_workers=False).state.queue.engine).revoke(
        key_id, None
    )
    started = time.monotonic()
    r = client.get("/v1/jobs")
    assert r.status_code == 401 and time.monotonic() - started < 1.0
    assert "revoked" in r.json()["error"]["message"]


def test_an_expired_key_and_a_disabled_owner_fail(world: World) -> None:
    key, made = world.keys.create(world.ids["victor"], "user", "short", None, 3600)
    client = world.client(Authorization=f"Bearer {key}")
    assert client.get("/v1/jobs").status_code == 200
    with sqlite3.connect(world.db) as db:  # an hour passes
        db.execute("UPDATE api_keys SET expires_at = ? WHERE id = ?", (time.time() - 1, made.id))
    assert client.get("/v1/jobs").status_code == 401
    other = world.bearer("victor")
    assert other.get("/v1/jobs").status_code == 200
    world.users.set_disabled(world.ids["victor"], True)
    assert other.get("/v1/jobs").status_code == 401


def test_key_scopes_shrink_with_the_owners_role(world: World) -> None:
    admin_key = world.key("admin")
    world.users.add("deputy", "deputy's long password", "admin")
    deputy = world.users.named("deputy")
    key, _ = world.keys.create(deputy.id, "admin", "ops")
    client = world.client(Authorization=f"Bearer {key}")
    assert client.get("/v1/users").status_code == 200
    world.users.set_role(deputy.id, "user")
    assert client.get("/v1/users").status_code == 403  # the key's admin scope went with the role
    assert client.get("/v1/jobs").status_code == 200
    assert world.client(Authorization=f"Bearer {admin_key}").get("/v1/users").status_code == 200


def test_keys_api_own_keys_and_admins(world: World) -> None:
    ursula = world.session("ursula")
    r = ursula.post("/v1/keys", json={"name": "laptop", "expires_in": "90d"})
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["key"].startswith("hs_") and len(made["key"]) >= 46
    assert made["scopes"] == ["jobs:read", "transcribe"]
    assert 89 * 86400 < made["expires_at"] - time.time() <= 90 * 86400
    listed = ursula.get("/v1/keys").json()["data"]
    assert [k["id"] for k in listed] == [made["id"]] and "key" not in listed[0]
    assert ursula.post("/v1/keys", json={"name": "x", "scopes": ["admin"]}).status_code == 400
    assert ursula.get("/v1/keys?user=victor").status_code == 403  # only admins name others
    victor = world.session("victor")
    assert victor.get("/v1/keys").json()["data"] == []
    assert victor.delete(f"/v1/keys/{made['id']}").status_code == 404  # not theirs: no such key
    admin = world.session("admin")
    everyone = admin.get("/v1/keys?user=*").json()["data"]
    assert made["id"] in [k["id"] for k in everyone]
    r = admin.post("/v1/keys", json={"name": "for-victor", "user": "victor"})
    assert r.status_code == 201 and r.json()["user"] == "victor"
    assert admin.delete(f"/v1/keys/{made['id']}").json()["state"] == "revoked"
    r = world.client(Authorization=f"Bearer {made['key']}").get("/v1/jobs")
    assert r.status_code == 401
    # Static keys from the configuration are for automation: they cannot mint keys.
    static = world.client(Authorization=f"Bearer {KEYS['alice']}")
    assert static.post("/v1/keys", json={"name": "x"}).status_code == 403


def test_basic_auth_is_off_unless_configured(tmp_path: Path) -> None:
    import base64

    token = base64.b64encode(f"ursula:{PASSWORDS['ursula']}".encode()).decode()
    off = World(tmp_path / "off")
    r = off.client(Authorization=f"Basic {token}").get("/v1/jobs")
    assert r.status_code == 401 and "Basic is off" in r.json()["error"]["message"]
    on = World(tmp_path / "on", auth={"basic": True})
    assert on.client(Authorization=f"Basic {token}").get("/v1/jobs").status_code == 200
    wrong = base64.b64encode(b"ursula:not her password at all").decode()
    assert on.client(Authorization=f"Basic {wrong}").get("/v1/jobs").status_code == 401


# --- sessions ----------------------------------------------------------------------------------


def test_session_cookie_flags_and_csrf(world: World) -> None:
    c = world.client()
    r = c.post("/v1/auth/login", json={"username": "ursula", "password": PASSWORDS["ursula"]})
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    flags = {f.strip().lower() for f in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/"} <= flags
    assert "secure" not in flags  # plain HTTP here; under TLS it is Secure (test_tls)
    token = r.json()["csrf_token"]
    assert c.get("/v1/jobs").status_code == 200  # reading needs no token
    r = c.post("/v1/keys", json={"name": "x"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"
    r = c.post("/v1/keys", json={"name": "x"}, headers={"X-CSRF-Token": "0" * 64})
    assert r.status_code == 403
    r = c.post("/v1/keys", json={"name": "x"}, headers={"X-CSRF-Token": token})
    assert r.status_code == 201
    # A form posted from elsewhere carries no token: the same refusal for every change.
    assert c.delete("/v1/jobs/nope").status_code == 403
    assert c.post("/v1/auth/logout").status_code == 403


def test_logout_ends_the_session_for_good(world: World) -> None:
    c = world.session("ursula")
    stolen = c.cookies.get(SESSION_COOKIE)
    assert c.post("/v1/auth/logout").status_code == 204
    replay = world.client()
    replay.cookies.set(SESSION_COOKIE, stolen)
    r = replay.get("/v1/jobs")
    assert r.status_code == 401 and "session has ended" in r.json()["error"]["message"]


def test_idle_and_absolute_session_timeouts(tmp_path: Path) -> None:
    idle = World(tmp_path / "idle", auth={"session_idle_s": 2})
    c = idle.session("ursula")
    for _ in range(4):  # used every 1.2 s for longer than the idle timeout: it stays
        assert c.get("/v1/jobs").status_code == 200
        time.sleep(1.2)
    time.sleep(1.5)  # then 2.7 s without a request
    r = c.get("/v1/jobs")
    assert r.status_code == 401 and "session has ended" in r.json()["error"]["message"]
    absolute = World(tmp_path / "abs", auth={"session_max_s": 3})
    started = time.monotonic()
    c = absolute.session("ursula")
    while time.monotonic() - started < 1.5:  # kept busy…
        assert c.get("/v1/jobs").status_code == 200
        time.sleep(0.3)
    time.sleep(max(0.0, started + 3.3 - time.monotonic()))
    assert c.get("/v1/jobs").status_code == 401  # …it still ends


def test_disabling_or_a_new_password_ends_sessions(world: World) -> None:
    c = world.session("victor")
    world.users.set_password(world.ids["victor"], "victor's new long password")
    assert c.get("/v1/jobs").status_code == 401
    c = world.client()
    r = c.post("/v1/auth/login", json={"username": "victor", "password": PASSWORDS["victor"]})
    assert r.status_code == 401
    admin = world.session("admin")
    c = world.session("ursula")
    assert admin.patch("/v1/users/ursula", json={"disabled": True}).json()["disabled"] is True
    assert c.get("/v1/jobs").status_code == 401
    r = world.client().post(
        "/v1/auth/login", json={"username": "ursula", "password": PASSWORDS["ursula"]}
    )
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_credentials"
    r = admin.patch("/v1/users/admin", json={"disabled": True})
    assert r.status_code == 400  # an admin cannot lock themselves out


# --- ownership ---------------------------------------------------------------------------------


def _job(world: World, owner: str) -> str:
    """A job row owned by a user (the queue's own insert, as a submission makes it)."""
    job = world.app.state.queue.enqueue(
        owner=world.ids[owner], task="transcribe", model="base", options={},
        blob_path="x", blob_sha256="0" * 64, blob_bytes=1, filename="meeting.wav",
    )  # fmt: skip
    return str(job.id)


def test_users_see_their_own_jobs_and_admins_see_metadata_only(world: World) -> None:
    mine, theirs = _job(world, "ursula"), _job(world, "victor")
    ursula, victor, admin = world.session("ursula"), world.session("victor"), world.session("admin")
    assert [j["id"] for j in ursula.get("/v1/jobs").json()["data"]] == [mine]
    assert ursula.get(f"/v1/jobs/{theirs}").status_code == 404
    assert ursula.get(f"/v1/jobs/{theirs}/result").status_code == 404
    assert ursula.delete(f"/v1/jobs/{theirs}").status_code == 404
    assert victor.get(f"/v1/jobs/{theirs}").json()["owner"] == world.ids["victor"]
    listed = {j["id"] for j in admin.get("/v1/jobs").json()["data"]}
    assert {mine, theirs} <= listed
    assert admin.get(f"/v1/jobs/{theirs}").json()["filename"] == "meeting.wav"
    assert admin.get(f"/v1/jobs/{theirs}/result").status_code == 404  # not the transcript
    assert admin.delete(f"/v1/jobs/{theirs}").status_code == 404
    assert victor.get(f"/v1/jobs/{theirs}").status_code == 200


# --- headers and metrics -----------------------------------------------------------------------


def test_security_headers_on_every_kind_of_answer(world: World) -> None:
    answers = [
        world.client().get("/healthz"),
        world.client().get("/v1/jobs"),  # 401
        world.session("ursula").get("/v1/users"),  # 403
        world.bearer("ursula").get("/v1/nope"),  # 404
        world.client().post("/v1/auth/login", content=b"{", headers={"content-type": "x/y"}),
    ]
    assert [a.status_code for a in answers] == [200, 401, 403, 404, 415]
    for r in answers:
        assert r.headers["content-security-policy"] == CSP
        assert "default-src 'self'" in CSP and "frame-ancestors 'none'" in CSP
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert "microphone=(self)" in r.headers["permissions-policy"]
        assert "server" not in r.headers
        assert "strict-transport-security" not in r.headers  # plain HTTP


def test_the_page_is_public_and_leads_nowhere_else(world: World) -> None:
    page = world.client().get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert page.headers["content-security-policy"] == CSP
    for sneaky in ("/ui/../v1/users", "/ui/%2e%2e/v1/users", "/ui/..%2fv1/users"):
        r = world.client().get(sneaky)
        assert r.status_code in (401, 404), (sneaky, r.status_code)
        assert "username" not in r.text


def test_websockets_need_the_same_credentials(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def who(ws: WebSocket) -> None:  # a stand-in for the live-caption endpoint
        await ws.accept()
        await ws.send_text(ws.state.principal.username)
        await ws.close()

    world.app.add_api_websocket_route("/v1/test-ws", who)
    monkeypatch.setitem(POLICY, ("WEBSOCKET", "/v1/test-ws"), "transcribe")
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        world.client().websocket_connect("/v1/test-ws"),
    ):
        pass
    assert refused.value.code == 1008
    key = world.key("ursula")
    in_url = "/v1/test-ws?api_key=" + key  # a key in the URL: refused even when valid
    with pytest.raises(WebSocketDisconnect), world.client().websocket_connect(in_url):
        pass
    bearer = {"Authorization": f"Bearer {key}"}
    with world.client().websocket_connect("/v1/test-ws", headers=bearer) as ws:
        assert ws.receive_text() == "ursula"
    browser = world.session("ursula")
    with browser.websocket_connect("/v1/test-ws", headers={"origin": "http://testserver"}) as ws:
        assert ws.receive_text() == "ursula"
    evil = {"origin": "https://evil.example"}  # another site's page riding on the cookie
    with pytest.raises(WebSocketDisconnect), browser.websocket_connect("/v1/test-ws", headers=evil):
        pass
    auditor = world.session("audrey")  # signed in, but without the route's scope
    with pytest.raises(WebSocketDisconnect) as refused, auditor.websocket_connect("/v1/test-ws"):
        pass
    assert refused.value.code == 1008


def test_readyz_tells_the_public_a_status_only(world: World) -> None:
    body = world.client().get("/readyz").json()
    assert set(body) == {"status", "reasons"} and body["status"] == "not ready"
    assert all("host" not in reason for reason in body["reasons"])


def test_metrics_need_the_scope_or_an_allowed_address(tmp_path: Path) -> None:
    closed = World(tmp_path / "closed")
    assert closed.client().get("/metrics").status_code == 401
    assert closed.bearer("admin", ["transcribe"]).get("/metrics").status_code == 403
    assert closed.bearer("admin", ["metrics"]).get("/metrics").status_code == 200
    scraper = World(tmp_path / "open", network={"metrics_allow": ["127.0.0.1/32"]})
    r = scraper.client().get("/metrics")
    assert r.status_code == 200 and "hushscribe_" in r.text
    other = TestClient(scraper.app, client=("127.0.0.2", 1))
    assert other.get("/metrics").status_code == 401  # allowed to connect, not to scrape
