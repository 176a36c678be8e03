"""Who is calling, and may they call this route: the one place access is decided.

``AccessGate`` (ASGI middleware, before routing and before any body is read) turns the request's
credentials into a :class:`Principal` or answers 401 — for every path but the public ones, so a
caller without credentials cannot tell real routes from unknown ones. ``authorize`` (a dependency
of the whole app, after routing) looks the matched route up in :data:`POLICY` and answers 403 when
the principal lacks the scope it needs. A route missing from the policy answers 403 to everyone
(fail closed); a test walks the route table so that none is missing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import logging
from collections.abc import Sequence
from ipaddress import ip_address
from typing import Annotated, Final, Literal

from fastapi import Depends, WebSocketException
from fastapi.responses import JSONResponse
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from hushscribe.api.network_gate import client_ip
from hushscribe.errors import CsrfFailed, Forbidden, HushscribeError, Unauthorized
from hushscribe.security.decisions import Decision, record
from hushscribe.security.keys import KEY_PREFIX, KeyStore
from hushscribe.security.network import IPNetwork, is_allowed
from hushscribe.security.principal import Principal, role_scopes
from hushscribe.security.signin import SignIn
from hushscribe.security.users import UserStore
from hushscribe.settings import Scope as ScopeName
from hushscribe.settings import Settings

log = logging.getLogger("hushscribe.access")

SESSION_COOKIE: Final = "hs_session"
CSRF_HEADER: Final = "x-csrf-token"
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
KEY_PARAMS: Final = frozenset({"api_key", "apikey", "key", "access_token", "token", "auth"})

PUBLIC: Final = "public"
SIGNED_IN: Final = "signed-in"
Rule = Literal["public", "signed-in"] | ScopeName

PUBLIC_PATHS: Final = frozenset({"/", "/healthz", "/readyz", "/v1/auth/login"})
PUBLIC_PREFIXES: Final = ("/ui/",)
"""The page and its assets: the sign-in form must load without credentials; nothing private."""

POLICY: Final[dict[tuple[str, str], Rule]] = {
    ("GET", "/"): PUBLIC,  # the page (its assets under /ui/ are static files, public too)
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): "metrics",  # or a source address in network.metrics_allow
    ("POST", "/v1/auth/login"): PUBLIC,
    ("POST", "/v1/auth/logout"): SIGNED_IN,
    ("GET", "/v1/auth/session"): SIGNED_IN,
    ("GET", "/v1/models"): "transcribe",
    ("GET", "/v1/models/{model_id}"): "transcribe",
    ("POST", "/v1/models/{model_id}/verify"): "admin",
    ("POST", "/v1/audio/transcriptions"): "transcribe",
    ("POST", "/v1/audio/translations"): "transcribe",
    ("WEBSOCKET", "/v1/realtime"): "transcribe",  # live captions
    ("POST", "/v1/jobs"): "transcribe",
    ("GET", "/v1/jobs"): "jobs:read",
    ("GET", "/v1/jobs/{job_id}"): "jobs:read",
    ("GET", "/v1/jobs/{job_id}/result"): "jobs:read",
    ("GET", "/v1/jobs/{job_id}/audio"): "jobs:read",
    ("DELETE", "/v1/jobs/{job_id}"): "transcribe",
    ("PATCH", "/v1/jobs/{job_id}/speakers"): "transcribe",  # its owner, or an admin
    ("GET", "/v1/keys"): SIGNED_IN,  # one's own keys; admins may name another user
    ("POST", "/v1/keys"): SIGNED_IN,
    ("DELETE", "/v1/keys/{key_id}"): SIGNED_IN,
    ("GET", "/v1/users"): "admin",
    ("POST", "/v1/users"): "admin",
    ("PATCH", "/v1/users/{username}"): "admin",
    ("GET", "/v1/status"): "admin",
    ("GET", "/v1/audit"): "audit:read",
    ("POST", "/v1/audit/verify"): "audit:read",
}


def csrf_token(session_id: str) -> str:
    """The CSRF token of a session: derived from its id (which scripts cannot read: HttpOnly),
    so nothing more is stored and a page gets it from ``GET /v1/auth/session``."""
    return hmac.new(session_id.encode(), b"hushscribe-csrf", hashlib.sha256).hexdigest()


class Authenticator:
    """Turns a request's credentials into a principal, checking the database every time."""

    def __init__(self, settings: Settings, users: UserStore, keys: KeyStore, signin: SignIn):
        self.settings = settings
        self.users = users
        self.keys = keys
        self.signin = signin
        self._static = {
            name: hashlib.sha256(key.get_secret_value().encode("utf-8", "surrogatepass")).digest()
            for name, key in settings.auth.api_keys.items()
        }

    def _static_key(self, token: str) -> Principal | None:
        presented = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        owner = None
        for name, digest in self._static.items():  # every one compared: timing tells nothing
            if hmac.compare_digest(presented, digest):
                owner = name
        if owner is None:
            return None
        return Principal(
            user_id=f"static:{owner}",
            username=owner,
            role="user",
            scopes=frozenset(self.settings.auth.static_key_scopes),
            method="static_key",
            key_id=f"static:{owner}",
        )

    def _basic(self, token: str, address: str) -> Principal:
        if not self.settings.auth.basic:
            raise Unauthorized("HTTP Basic is off (auth.basic); send `Authorization: Bearer KEY`")
        try:
            username, sep, password = base64.b64decode(token, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            sep = ""
        if not sep:
            raise Unauthorized("malformed Basic credentials")
        user, _method = self.signin.authenticate(username, password, address)
        return Principal(user.id, user.username, user.role, role_scopes(user.role), "basic")

    def resolve(self, headers: dict[str, str], cookies: dict[str, str], address: str) -> Principal:
        """The principal, or Unauthorized / TooManyAttempts / DirectoryUnavailable."""
        header = headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if header:
            if scheme.lower() == "bearer" and token:
                found = (
                    self.keys.principal(token)
                    if token.startswith(KEY_PREFIX)
                    else self._static_key(token)
                )
                if found is not None:
                    return found
                raise Unauthorized("invalid, revoked or expired API key")
            if scheme.lower() == "basic" and token:
                return self._basic(token, address)
            raise Unauthorized("unsupported Authorization header; send `Bearer KEY`")
        session_id = cookies.get(SESSION_COOKIE)
        if session_id:
            found = self.users.session_principal(session_id, self.settings.auth.session_idle_s)
            if found is not None:
                return found
            raise Unauthorized("your session has ended; sign in again")
        if self.settings.auth.allow_anonymous:
            scopes: frozenset[ScopeName] = frozenset({"transcribe", "jobs:read"})
            return Principal("anonymous", "anonymous", "user", scopes, "anonymous")
        raise Unauthorized("sign in, or send an API key: `Authorization: Bearer KEY`")


async def _record_denial(exc: HushscribeError, address: str, path: str) -> None:
    """A refusal on the record (in a thread: the audit log syncs to disk). If the record cannot
    be written the refusal still stands: refusing does nothing that needs undoing."""
    outcome = {429: "throttled", 401: "denied_auth", 503: "denied_auth"}.get(
        exc.status, "denied_permission"
    )
    denied = Decision("request", outcome, address, target=path, details={"code": exc.code})
    try:
        await asyncio.to_thread(record, denied)
    except HushscribeError:
        log.exception("could not record a refusal")


class AccessGate:
    """ASGI middleware: credentials → principal (in ``scope["state"]["principal"]``), or 401 —
    for HTTP and WebSockets alike (a refused WebSocket is closed with 1008 before the handshake
    completes, which the client sees as HTTP 403)."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self.app = app
        self.auth = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        websocket = scope["type"] == "websocket"
        path = scope.get("path", "")
        public = path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)
        if not websocket and (scope["type"] != "http" or public):
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        address = client_ip(conn)
        try:
            principal = await self._admit(conn, address, websocket)
        except HushscribeError as exc:
            await _record_denial(exc, address, path)
            if websocket:
                await send({"type": "websocket.close", "code": 1008})
            else:
                response = JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)
                await response(scope, receive, send)
            return
        if principal is not None:
            scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    async def _admit(self, conn: HTTPConnection, address: str, websocket: bool) -> Principal | None:
        """The principal of a request or WebSocket; None for a scrape from ``metrics_allow``.
        Raises what the caller is told."""
        if KEY_PARAMS & {k.lower() for k in conn.query_params}:
            raise Unauthorized(
                "credentials in the URL are refused (URLs end up in logs and browser history); "
                "send `Authorization: Bearer KEY`"
            )
        allowed = self.auth.settings.network.metrics_allow
        if not websocket and conn.url.path == "/metrics" and _in(address, allowed):
            return None
        principal = await asyncio.to_thread(
            self.auth.resolve, dict(conn.headers), dict(conn.cookies), address
        )
        if principal.method != "session":
            return principal
        if websocket:  # a cookie rides along from any page: only this origin's pages may use it
            origin = conn.headers.get("origin")
            if origin is not None and origin.split("://", 1)[-1] != conn.headers.get("host", ""):
                raise CsrfFailed("a WebSocket from another origin")
        elif conn.scope["method"] not in SAFE_METHODS:
            sent = conn.headers.get(CSRF_HEADER, "")
            expected = csrf_token(conn.cookies.get(SESSION_COOKIE, ""))
            if not hmac.compare_digest(sent.encode(), expected.encode()):
                raise CsrfFailed(f"missing or wrong {CSRF_HEADER} header for this session")
        return principal


def _in(address: str, networks: Sequence[IPNetwork]) -> bool:
    return bool(networks) and is_allowed(ip_address(address), networks)


def principal_of(conn: HTTPConnection) -> Principal | None:
    found = getattr(conn.state, "principal", None)
    return found if isinstance(found, Principal) else None


async def authorize(conn: HTTPConnection) -> None:
    """App-wide dependency: the matched route's rule from :data:`POLICY`, applied. WebSocket
    routes are keyed by the method ``WEBSOCKET``; refusing one closes it with 1008."""
    websocket = conn.scope["type"] == "websocket"
    method = "WEBSOCKET" if websocket else conn.scope["method"]
    template = getattr(conn.scope.get("route"), "path", "")
    rule = POLICY.get((method, template))
    if method == "HEAD" and rule is None:
        rule = POLICY.get(("GET", template))
    if rule == PUBLIC:
        return
    principal = principal_of(conn)
    if rule == "metrics" and principal is None:
        return  # let through by network.metrics_allow in the gate
    refusal: HushscribeError | None = None
    if principal is None:
        refusal = Unauthorized("sign in, or send an API key: `Authorization: Bearer KEY`")
    elif rule is None or (rule != SIGNED_IN and not principal.can(rule)):
        needed = "an access rule (none is set for this route)" if rule is None else rule
        denied = Decision(
            "request", "denied_permission", client_ip(conn), principal.username,
            principal.method, conn.url.path, {"needs": needed},
            user_id=principal.user_id, key_id=principal.key_id,
        )  # fmt: skip
        with contextlib.suppress(HushscribeError):
            await asyncio.to_thread(record, denied)
        refusal = Forbidden(f"not allowed: this needs {needed}")
    if refusal is not None:
        if websocket:
            raise WebSocketException(code=1008, reason=refusal.message[:120])
        raise refusal


def get_principal(conn: HTTPConnection) -> Principal:
    principal = principal_of(conn)
    if principal is None:  # only on routes the policy makes public; they do not ask for one
        raise Unauthorized("sign in, or send an API key: `Authorization: Bearer KEY`")
    return principal


Caller = Annotated[Principal, Depends(get_principal)]
