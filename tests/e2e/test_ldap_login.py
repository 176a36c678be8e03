"""Browser sign-in against a real directory, end to end: a real ``hushscribe serve`` configured
through its environment signs users in against a real slapd, gives them their group's role, and
fails closed (503, no session) while the directory is down."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from hushscribe.api.access import SESSION_COOKIE
from tests.ldap_server import (
    GROUP_ROLES,
    GROUPS,
    PASSWORDS,
    PEOPLE,
    SERVICE_DN,
    SERVICE_PASSWORD,
    Slapd,
)
from tests.ldap_server import slapd as slapd  # the fixture
from tests.service import ADMIN_PASSWORD, Service, service_data_dir


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, slapd: Slapd) -> Iterator[Service]:
    """A server (no models: sign-in needs none) whose directory is the test slapd."""
    env = {
        "HUSHSCRIBE_AUTH__LDAP__URL": slapd.url,
        "HUSHSCRIBE_AUTH__LDAP__START_TLS": "true",
        "HUSHSCRIBE_AUTH__LDAP__CA_FILE": str(slapd.ca_file),
        "HUSHSCRIBE_AUTH__LDAP__BIND_DN": SERVICE_DN,
        "HUSHSCRIBE_AUTH__LDAP__BIND_PASSWORD": SERVICE_PASSWORD,
        "HUSHSCRIBE_AUTH__LDAP__USER_BASE": PEOPLE,
        "HUSHSCRIBE_AUTH__LDAP__GROUP_BASE": GROUPS,
        "HUSHSCRIBE_AUTH__LDAP__GROUP_ROLES": json.dumps(GROUP_ROLES),
        "HUSHSCRIBE_AUTH__LDAP__TIMEOUT_S": "3",
    }
    svc = Service(service_data_dir(tmp_path_factory.mktemp("ldap-login"), None), env=env)
    try:
        yield svc.start(wait_ready=False)
    finally:
        svc.stop()


def login(svc: Service, username: str, password: str) -> httpx.Response:
    with httpx.Client(base_url=svc.url, timeout=30) as client:
        return client.post("/v1/auth/login", json={"username": username, "password": password})


def signed_in(svc: Service, username: str, password: str) -> dict[str, Any]:
    """Sign in, then prove the session works: ``/v1/auth/session`` with only the cookie."""
    r = login(svc, username, password)
    assert r.status_code == 200, r.text
    cookie = r.cookies.get(SESSION_COOKIE)
    assert cookie, r.headers
    assert "httponly" in r.headers["set-cookie"].lower()
    with httpx.Client(base_url=svc.url, timeout=30, cookies={SESSION_COOKIE: cookie}) as client:
        me = client.get("/v1/auth/session")
    assert me.status_code == 200, me.text
    assert me.json()["user"]["username"] == username
    body: dict[str, Any] = r.json()
    return body


def refused(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert SESSION_COOKIE not in r.cookies
    assert "set-cookie" not in r.headers


def test_directory_users_sign_in_with_their_group_role(server: Service) -> None:
    alice = signed_in(server, "alice", PASSWORDS["alice"])
    assert alice["user"] | {"id": None} == {
        "id": None,
        "username": "alice",
        "role": "user",
        "auth": "ldap",
    }
    assert "admin" not in alice["scopes"]
    olga = signed_in(server, "olga", PASSWORDS["olga"])  # a password that is not ASCII
    assert olga["user"] | {"id": None} == {
        "id": None,
        "username": "olga",
        "role": "admin",
        "auth": "ldap",
    }
    assert "admin" in olga["scopes"]
    audrey = signed_in(server, "audrey", PASSWORDS["audrey"])
    assert audrey["user"] | {"id": None} == {
        "id": None,
        "username": "audrey",
        "role": "auditor",
        "auth": "ldap",
    }


def test_bad_directory_logins_get_one_answer(server: Service) -> None:
    answers = [
        login(server, "mallory", PASSWORDS["mallory"]),  # right password, no mapped group
        login(server, "alice", PASSWORDS["alice"] + "x"),
        login(server, "nobody-here", PASSWORDS["alice"]),
        login(server, "*", PASSWORDS["alice"]),
    ]
    for r in answers:
        refused(r, 401, "invalid_credentials")
    assert len({r.json()["error"]["message"] for r in answers}) == 1


def test_directory_down_is_503_never_a_session_and_sign_in_recovers(
    server: Service, slapd: Slapd
) -> None:
    signed_in(server, "alice", PASSWORDS["alice"])  # alice is now a known (provisioned) user
    with slapd.stopped():
        refused(login(server, "alice", PASSWORDS["alice"]), 503, "directory_unavailable")
        refused(login(server, "olga", PASSWORDS["olga"]), 503, "directory_unavailable")
        # the local admin does not depend on the directory
        assert login(server, "admin", ADMIN_PASSWORD).status_code == 200
    alice = signed_in(server, "alice", PASSWORDS["alice"])
    assert alice["user"] | {"id": None} == {
        "id": None,
        "username": "alice",
        "role": "user",
        "auth": "ldap",
    }
