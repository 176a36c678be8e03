"""Directory sign-in against a real slapd: roles from groups, one answer for every bad login,
encryption that is never given up, and a directory that is down failing closed."""

from __future__ import annotations

import logging
import re
import time

import pytest
from pydantic import ValidationError

from hushscribe.errors import DirectoryUnavailable, InvalidCredentials
from hushscribe.security.ldap import DirectoryUser, LdapDirectory
from hushscribe.settings import LdapSettings, Role
from tests.ldap_server import GROUPS, PASSWORDS, PEOPLE, SERVICE_DN, Slapd, dn
from tests.ldap_server import slapd as slapd  # the fixture

INVALID = "invalid user name or password"


def sign_in(settings: LdapSettings, username: str, password: str) -> DirectoryUser:
    return LdapDirectory(settings).authenticate(username, password)


def refused(settings: LdapSettings, username: str, password: str) -> str:
    with pytest.raises(InvalidCredentials) as caught:
        sign_in(settings, username, password)
    return caught.value.message


def unavailable(settings: LdapSettings, username: str = "alice", password: str = "") -> None:
    with pytest.raises(DirectoryUnavailable) as caught:
        sign_in(settings, username, password or PASSWORDS["alice"])
    assert caught.value.status == 503


def binds(log: str) -> list[str]:
    return re.findall(r' BIND dn="([^"]*)"', log)


@pytest.mark.parametrize(
    ("name", "role", "display_name"),
    [
        ("alice", "user", "Alice L."),  # displayName wins over cn
        ("olga", "admin", "Olga Adminova"),  # also a transcriber: the strongest role wins
        ("audrey", "auditor", "Audrey Auditor"),  # also a transcriber: auditor > user
    ],
)
def test_directory_users_sign_in_with_the_role_of_their_groups(
    slapd: Slapd, name: str, role: Role, display_name: str
) -> None:
    user = sign_in(slapd.settings(), name, PASSWORDS[name])
    assert user == DirectoryUser(username=name, dn=dn(name), role=role, display_name=display_name)


def test_memberof_is_read_when_no_group_base_is_set(slapd: Slapd) -> None:
    settings = slapd.settings(group_base=None)
    assert sign_in(settings, "olga", PASSWORDS["olga"]).role == "admin"
    assert sign_in(settings, "audrey", PASSWORDS["audrey"]).role == "auditor"
    assert sign_in(settings, "alice", PASSWORDS["alice"]).role == "user"
    assert refused(settings, "mallory", PASSWORDS["mallory"]) == INVALID


def test_name_is_returned_as_the_directory_spells_it_and_group_dns_compare_loosely(
    slapd: Slapd,
) -> None:
    for typed in ("ALICE", " Alice "):  # uid matches ignoring case and surrounding spaces
        user = sign_in(slapd.settings(), typed, PASSWORDS["alice"])
        assert (user.username, user.dn) == ("alice", dn("alice"))
    loose = slapd.settings(group_roles={"CN=HS-Admins, OU=Groups, DC=Example, DC=Org": "admin"})
    assert sign_in(loose, "olga", PASSWORDS["olga"]).role == "admin"
    assert refused(loose, "alice", PASSWORDS["alice"]) == INVALID  # transcribers not mapped here


def test_wrong_password_and_unknown_user_get_the_same_answer(slapd: Slapd) -> None:
    settings = slapd.settings()
    wrong = refused(settings, "alice", PASSWORDS["alice"] + "x")
    unknown = refused(settings, "nobody", PASSWORDS["alice"])
    other_users_password = refused(settings, "alice", PASSWORDS["olga"])
    assert wrong == unknown == other_users_password == INVALID


def test_user_in_no_mapped_group_is_refused_unless_a_default_role_is_set(slapd: Slapd) -> None:
    assert refused(slapd.settings(), "mallory", PASSWORDS["mallory"]) == INVALID
    settings = slapd.settings(default_role="user")
    user = sign_in(settings, "mallory", PASSWORDS["mallory"])
    assert (user.username, user.role) == ("mallory", "user")
    assert refused(settings, "mallory", "wrong") == INVALID  # the default role skips no check
    assert sign_in(settings, "olga", PASSWORDS["olga"]).role == "admin"  # mapped groups still win


def test_a_name_that_matches_several_entries_is_refused(slapd: Slapd) -> None:
    assert refused(slapd.settings(default_role="user"), "twin", PASSWORDS["twin"]) == INVALID
    # The same entry found alone signs in: the refusal above is about the ambiguity.
    narrow = slapd.settings(default_role="user", user_base=f"ou=contractors,{PEOPLE}")
    assert sign_in(narrow, "twin", PASSWORDS["twin"]).dn == f"uid=twin,ou=contractors,{PEOPLE}"


def test_an_entry_without_password_cannot_sign_in(slapd: Slapd) -> None:
    for password in ("x", "nopass", PASSWORDS["alice"]):
        assert refused(slapd.settings(), "nopass", password) == INVALID


def test_empty_password_is_refused_without_asking_the_directory(slapd: Slapd) -> None:
    settings = slapd.settings()
    offset = slapd.log_size()
    assert refused(settings, "alice", "") == INVALID
    assert binds(slapd.log_since(offset)) == []  # no unauthenticated bind, not even a search
    with slapd.stopped():
        assert refused(settings, "alice", "") == INVALID  # not "directory unavailable"
        assert refused(settings, "alice", None) == INVALID  # type: ignore[arg-type]
        unavailable(settings)  # the control: a real password does need the directory


@pytest.mark.parametrize("name", ["", "a" * 257, "alice\x00", "alice\n", "al\x1bice"])
def test_malformed_user_names_are_refused_before_the_directory(slapd: Slapd, name: str) -> None:
    with slapd.stopped():
        assert refused(slapd.settings(), name, PASSWORDS["alice"]) == INVALID


@pytest.mark.parametrize(
    ("name", "filter_seen"),
    [
        ("*", r"(uid=\2A)"),
        ("alice*", r"(uid=alice\2A)"),
        ("al*", r"(uid=al\2A)"),
        ("alice)(uid=*", r"(uid=alice\29\28uid=\2A)"),
        ("*)(|(uid=*", r"(uid=\2A\29\28|\28uid=\2A)"),
        ("alice\\", r"(uid=alice\5C)"),
    ],
)
def test_filter_characters_in_the_name_are_matched_literally(
    slapd: Slapd, name: str, filter_seen: str
) -> None:
    offset = slapd.log_size()
    assert refused(slapd.settings(), name, PASSWORDS["alice"]) == INVALID
    log = slapd.log_since(offset)
    assert re.findall(r'SRCH base="[^"]*" scope=\d deref=\d filter="([^"]*)"', log) == [filter_seen]
    assert dn("alice") not in binds(log)  # alice's entry was never a candidate


def test_ldaps_works_too(slapd: Slapd) -> None:
    settings = slapd.settings(url=slapd.ldaps_url, start_tls=False)
    assert sign_in(settings, "olga", PASSWORDS["olga"]).role == "admin"
    assert refused(settings, "olga", "wrong") == INVALID


@pytest.mark.parametrize("transport", ["starttls", "ldaps"])
def test_an_untrusted_certificate_is_never_passed_over(slapd: Slapd, transport: str) -> None:
    tls: dict[str, object] = (
        {"start_tls": True} if transport == "starttls" else
        {"url": slapd.ldaps_url, "start_tls": False}
    )  # fmt: skip
    offset = slapd.log_size()
    unavailable(slapd.settings(ca_file=slapd.wrong_ca_file, **tls))
    unavailable(slapd.settings(ca_file=None, **tls))  # the system's CAs do not know the test CA
    log = slapd.log_since(offset)
    assert binds(log) == []  # nothing, not even the service's password, sent without TLS
    assert "TLS negotiation failure" in log


def test_a_certificate_for_another_host_is_refused(slapd: Slapd) -> None:
    offset = slapd.log_size()
    unavailable(slapd.settings(url=slapd.other_host_url, start_tls=False))  # 127.0.0.2
    assert binds(slapd.log_since(offset)) == []


def test_plaintext_needs_an_explicit_opt_in(slapd: Slapd) -> None:
    with pytest.raises(ValidationError, match="start_tls"):
        LdapSettings(url=slapd.url, user_base=PEOPLE)
    plain = slapd.settings(start_tls=False, allow_plaintext=True, ca_file=None)
    assert sign_in(plain, "alice", PASSWORDS["alice"]).role == "user"


def test_directory_down_fails_closed_and_recovers(slapd: Slapd) -> None:
    settings = slapd.settings()
    assert sign_in(settings, "alice", PASSWORDS["alice"]).role == "user"
    with slapd.stopped():
        unavailable(settings)
        unavailable(settings, "mallory", PASSWORDS["mallory"])
        unavailable(slapd.settings(url=slapd.ldaps_url, start_tls=False))
    assert sign_in(settings, "alice", PASSWORDS["alice"]).role == "user"


def test_a_directory_that_does_not_answer_times_out(slapd: Slapd) -> None:
    settings = slapd.settings(timeout_s=1)
    with slapd.frozen():  # the kernel accepts the connection; slapd never replies
        started = time.monotonic()
        unavailable(settings)
        assert time.monotonic() - started < 15  # 1 s timeout; without one this would hang
    assert sign_in(settings, "alice", PASSWORDS["alice"]).role == "user"


def test_the_service_account_is_needed_and_its_failure_is_an_outage(slapd: Slapd) -> None:
    unavailable(slapd.settings(bind_password="not-the-service-password"))
    # Anonymous users see nothing of this directory, not even ou=people (noSuchObject): without
    # the account no one signs in, and the misconfiguration reads as an outage.
    unavailable(slapd.settings(bind_dn=None, bind_password=None))
    unavailable(slapd.settings(bind_password=None))  # a DN without a password: not anonymous


def test_the_service_connection_is_never_bound_as_the_user(slapd: Slapd) -> None:
    offset = slapd.log_size()
    sign_in(slapd.settings(), "alice", PASSWORDS["alice"])
    log = slapd.log_since(offset)
    bound: dict[str, set[str]] = {}  # connection → the DNs bound on it
    for conn, bind_dn in re.findall(r'conn=(\d+) op=\d+ BIND dn="([^"]*)"', log):
        bound.setdefault(conn, set()).add(bind_dn)
    assert sorted(bound.values(), key=sorted) == [{SERVICE_DN}, {dn("alice")}]
    service_conn = next(c for c, dns in bound.items() if dns == {SERVICE_DN})
    searches = re.findall(r'conn=(\d+) op=\d+ SRCH base="([^"]*)"', log)
    assert searches == [(service_conn, PEOPLE), (service_conn, GROUPS)]


def test_passwords_are_never_logged(slapd: Slapd, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    password = PASSWORDS["alice"]
    refused(slapd.settings(), "alice", password + "-wrong")
    unavailable(slapd.settings(bind_password="svc-wrong-Secret"))
    with slapd.stopped():
        unavailable(slapd.settings())
    assert caplog.records  # the outages were logged...
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert password not in text and "svc-wrong-Secret" not in text  # ...without the secrets
