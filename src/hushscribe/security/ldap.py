"""Sign-in against an LDAP directory: search for the user as the service account, bind as the user.

Every answer that means "these credentials are not good" (unknown name, wrong password, several
entries, no mapped group) is the same :class:`InvalidCredentials`, so names cannot be probed. A
directory that cannot be reached or trusted is :class:`DirectoryUnavailable`: sign-in fails closed.
Connections are encrypted (ldaps:// or StartTLS) with the server's certificate and name verified,
unless ``allow_plaintext`` says otherwise. Calls block: run them in a worker thread.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import ssl
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

with warnings.catch_warnings():
    # ldap3 2.9.1 (the last release) imports pyasn1 names that pyasn1 0.6 renamed and still
    # serves with a DeprecationWarning; nothing to fix on our side.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ldap3\.")
    from ldap3 import NONE, SIMPLE, SUBTREE, Connection, Server, Tls
    from ldap3.core.exceptions import LDAPException
    from ldap3.utils.conv import escape_filter_chars
    from ldap3.utils.dn import parse_dn

from hushscribe.errors import DirectoryUnavailable, InvalidCredentials
from hushscribe.settings import LdapSettings, Role

log = logging.getLogger(__name__)

INVALID: Final = "invalid user name or password"
UNAVAILABLE: Final = "the directory (LDAP) cannot be reached; try again later"
MAX_USERNAME_CHARS: Final = 256
ROLE_STRENGTH: Final[dict[Role, int]] = {"admin": 3, "auditor": 2, "user": 1}
# Bind results that mean "the directory is there but cannot answer now"; any other refusal of the
# user's bind (invalidCredentials 49, unwillingToPerform 53, a locked account...) is a bad login.
_BUSY_RESULTS: Final = frozenset({51, 52, 80})  # busy, unavailable, other
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NAME_ATTR = re.compile(r"\(\s*([A-Za-z][A-Za-z0-9-]*)\s*=\s*\{username\}\s*\)")


@dataclass(frozen=True)
class DirectoryUser:
    username: str  # as stored in the directory (canonical case)
    dn: str
    role: Role
    display_name: str | None


class _VerifiedTls(Tls):  # type: ignore[misc]  # ldap3 has no type hints
    """TLS with the certificate chain and the host name checked by OpenSSL during the handshake.

    ldap3's own host name check calls ``ssl.match_hostname``, deprecated since Python 3.7 and gone
    in 3.12; here the standard library's context does it (``check_hostname``) instead.
    """

    def __init__(self, ca_file: str | None) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED, ca_certs_file=ca_file)
        self._context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        connection.socket = self._context.wrap_socket(
            connection.socket,
            server_side=False,
            do_handshake_on_connect=do_handshake,
            server_hostname=connection.server.host,
        )


def _normal_dn(dn: str) -> str:
    """A DN for comparison: attribute names and values in lower case, no spaces around ``,=``."""
    try:
        return ",".join(
            f"{a.strip().lower()}={v.strip().lower()}" for a, v, _ in parse_dn(dn, strip=True)
        )
    except LDAPException:
        return dn.strip().lower()


def _valid_username(username: str) -> bool:
    return 0 < len(username) <= MAX_USERNAME_CHARS and not _CONTROL.search(username)


def _first(values: Any) -> str | None:
    if isinstance(values, list | tuple):
        return str(values[0]) if values else None
    return str(values) if values not in (None, "") else None


class LdapDirectory:
    """Checks a user name and password against the directory ``settings`` describes."""

    def __init__(self, settings: LdapSettings) -> None:
        self.settings = settings
        self._roles = {_normal_dn(g): role for g, role in settings.group_roles.items()}
        match = _NAME_ATTR.search(settings.user_filter)
        self._name_attr = match.group(1) if match else None
        self._ldaps = settings.url.lower().startswith("ldaps://")
        self._tls = None
        if self._ldaps or settings.start_tls:
            self._tls = _VerifiedTls(str(settings.ca_file) if settings.ca_file else None)

    def authenticate(self, username: str, password: str) -> DirectoryUser:
        """The directory's user with this name and password, and their role.

        Raises :class:`InvalidCredentials` or :class:`DirectoryUnavailable`.
        """
        if not password or not isinstance(password, str) or not _valid_username(username):
            raise InvalidCredentials(INVALID)  # an empty password would bind anonymously
        try:
            return self._authenticate(username, password)
        except LDAPException as exc:
            log.warning(
                "LDAP sign-in of %r failed: directory error %s", username, type(exc).__name__
            )
            raise DirectoryUnavailable(UNAVAILABLE) from None
        except OSError as exc:  # ssl.SSLError, socket errors ldap3 does not wrap
            log.warning("LDAP sign-in of %r failed: %s", username, type(exc).__name__)
            raise DirectoryUnavailable(UNAVAILABLE) from None

    def _connect(self, user: str | None, password: str | None) -> Connection:
        """An open (and, with StartTLS, encrypted) connection, not yet bound."""
        server = Server(  # one per connection: ldap3 keeps per-connection state in it
            self.settings.url,
            use_ssl=self._ldaps,
            tls=self._tls,
            get_info=NONE,
            connect_timeout=self.settings.timeout_s,
        )
        conn = Connection(
            server,
            user=user,
            password=password,
            authentication=SIMPLE if user else None,
            auto_bind=False,
            read_only=True,
            auto_referrals=False,
            raise_exceptions=False,
            # whole seconds: ldap3 packs it into SO_RCVTIMEO as an integer
            receive_timeout=max(1, math.ceil(self.settings.timeout_s)),
        )
        try:
            conn.open()
            if self.settings.start_tls and not self._ldaps:
                conn.start_tls()
                if not conn.tls_started:
                    raise DirectoryUnavailable(UNAVAILABLE)
        except BaseException:
            _close(conn)
            raise
        return conn

    def _authenticate(self, username: str, password: str) -> DirectoryUser:
        s = self.settings
        bind_password = s.bind_password.get_secret_value() if s.bind_password else None
        service = self._connect(s.bind_dn, bind_password)
        try:
            if not service.bind():
                log.warning("LDAP service bind as %r refused: %s", s.bind_dn, _result(service))
                raise DirectoryUnavailable(UNAVAILABLE)
            search_filter = s.user_filter.replace("{username}", escape_filter_chars(username))
            attributes = ["cn", "displayName"] + ([self._name_attr] if self._name_attr else [])
            if not s.group_base:
                attributes.append("memberOf")
            service.search(s.user_base, search_filter, SUBTREE, attributes=attributes,
                           size_limit=2)  # fmt: skip
            code = service.result.get("result")
            if code not in (0, 4):  # 4: sizeLimitExceeded, several entries
                if code == 32:  # noSuchObject: user_base is wrong (or hidden from the account)
                    log.warning("LDAP user_base %r not found", s.user_base)
                raise DirectoryUnavailable(UNAVAILABLE)
            entries = [e for e in service.response or [] if e.get("type") == "searchResEntry"]
            if code == 4 or len(entries) != 1:
                raise InvalidCredentials(INVALID)
            entry = entries[0]
            user_dn: str = entry["dn"]
            attrs: dict[str, Any] = entry.get("attributes") or {}
            self._bind_as(user_dn, password)
            if s.group_base:
                groups = self._search_groups(service, user_dn)
            else:
                groups = [str(g) for g in attrs.get("memberOf") or []]
        finally:
            _close(service)
        role = self._role(groups)
        if role is None:
            raise InvalidCredentials(INVALID)
        return DirectoryUser(
            username=self._canonical(username, attrs),
            dn=user_dn,
            role=role,
            display_name=_first(attrs.get("displayName")) or _first(attrs.get("cn")),
        )

    def _bind_as(self, user_dn: str, password: str) -> None:
        """Bind as the user on a connection of its own; the service connection stays the
        service's."""
        conn = self._connect(user_dn, password)
        try:
            if conn.bind():
                return
            code = conn.result.get("result")
        finally:
            _close(conn)
        if code in _BUSY_RESULTS:
            raise DirectoryUnavailable(UNAVAILABLE)
        raise InvalidCredentials(INVALID)

    def _search_groups(self, service: Connection, user_dn: str) -> list[str]:
        assert self.settings.group_base is not None
        group_filter = self.settings.group_filter.replace("{dn}", escape_filter_chars(user_dn))
        service.search(self.settings.group_base, group_filter, SUBTREE, attributes=["1.1"])
        if service.result.get("result") not in (0, 4):
            raise DirectoryUnavailable(UNAVAILABLE)
        return [e["dn"] for e in service.response or [] if e.get("type") == "searchResEntry"]

    def _role(self, groups: Iterable[str]) -> Role | None:
        roles = [r for g in groups if (r := self._roles.get(_normal_dn(g))) is not None]
        if roles:
            return max(roles, key=ROLE_STRENGTH.__getitem__)
        return self.settings.default_role

    def _canonical(self, typed: str, attrs: dict[str, Any]) -> str:
        """The name as the directory spells it (``ALICE`` and `` alice`` sign in as ``alice``):
        the value of the filter's attribute that matches, else its first value."""
        values = attrs.get(self._name_attr) if self._name_attr else None
        names = [str(v) for v in values if v] if isinstance(values, list) else []
        for name in names:
            if name.casefold() == typed.strip().casefold():
                return name
        return names[0] if names else typed.strip()


def _result(conn: Connection) -> str:
    result = conn.result or {}
    return f"{result.get('result')} {result.get('description')}"


def _close(conn: Connection) -> None:
    """Unbind and close; ldap3 leaves the socket open when connecting or unbinding failed."""
    try:
        conn.unbind()
    except (LDAPException, OSError):
        pass
    finally:
        sock = getattr(conn, "socket", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
