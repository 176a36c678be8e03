"""Browser sign-in: a form posts user name and password, the answer sets a session cookie.

The cookie is HttpOnly (scripts cannot read it), SameSite=Strict (no other site can send it),
Secure under TLS, and holds a random id that the database stores only hashed. Changes made with
the cookie need the session's CSRF token in ``X-CSRF-Token`` (see ``access.py``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Final
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from hushscribe.api.access import SESSION_COOKIE, Caller, csrf_token
from hushscribe.api.network_gate import client_ip
from hushscribe.errors import HushscribeError, InvalidRequest, TooLarge, UnsupportedBody
from hushscribe.security.decisions import Decision, record
from hushscribe.security.principal import Principal, role_scopes
from hushscribe.security.signin import SignIn
from hushscribe.security.users import User, UserStore

router = APIRouter(prefix="/v1/auth", tags=["auth"])

MAX_LOGIN_BODY: Final = 8192


async def _credentials(request: Request) -> tuple[str, str]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_LOGIN_BODY:
            raise TooLarge("a sign-in request is at most 8 KiB")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fields: dict[str, Any]
    if kind == "application/json":
        try:
            fields = json.loads(body or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InvalidRequest("the sign-in body is not valid JSON") from None
        if not isinstance(fields, dict):
            raise InvalidRequest("the sign-in body is a JSON object")
    elif kind == "application/x-www-form-urlencoded":
        try:
            fields = {k: v[0] for k, v in parse_qs(body.decode(), max_num_fields=8).items()}
        except (UnicodeDecodeError, ValueError):
            raise InvalidRequest("the sign-in form is not valid") from None
    else:
        raise UnsupportedBody("send the sign-in as JSON or a form")
    username, password = fields.get("username"), fields.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username:
        raise InvalidRequest("send `username` and `password`")
    return username, password


def _session_view(user: User | Principal, method: str, csrf: str | None) -> dict[str, Any]:
    return {
        "user": {
            "id": user.user_id if isinstance(user, Principal) else user.id,
            "username": user.username,
            "role": user.role,
            "auth": method,
        },
        "scopes": sorted(user.scopes if isinstance(user, Principal) else role_scopes(user.role)),
        "csrf_token": csrf,
    }


@router.post("/login")
async def login(request: Request) -> JSONResponse:
    """Sign in with ``username`` and ``password`` (JSON or form); sets the session cookie."""
    state = request.app.state
    settings = state.settings
    address = client_ip(request)
    username, password = await _credentials(request)
    signin: SignIn = state.signin
    try:
        user, method = await asyncio.to_thread(signin.authenticate, username, password, address)
    except HushscribeError as exc:
        outcome = {429: "throttled", 503: "directory_unavailable"}.get(exc.status, "denied_auth")
        name = username.strip().lower()[:128]
        failed = Decision("login", outcome, address, actor=name, details={"code": exc.code})
        await asyncio.to_thread(record, failed)
        raise
    # Recorded before the session exists: if the audit log cannot take it, no session is made.
    signed = Decision("login", "ok", address, user.username, method, user_id=user.id)
    await asyncio.to_thread(record, signed)
    users: UserStore = state.users
    session_id = await asyncio.to_thread(
        users.start_session, user, method, settings.auth.session_max_s
    )
    response = JSONResponse(_session_view(user, method, csrf_token(session_id)))
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=int(settings.auth.session_max_s),
        path="/",
        httponly=True,
        samesite="strict",
        secure=settings.server.tls,
    )
    return response


@router.post("/logout")
async def logout(request: Request, principal: Caller) -> Response:
    """End this browser session (API keys have nothing to end: revoke them instead)."""
    done = Decision(
        "logout", "ok", client_ip(request), principal.username, principal.method,
        user_id=principal.user_id, key_id=principal.key_id,
    )  # fmt: skip
    await asyncio.to_thread(record, done)
    if principal.session_hash is not None:
        users: UserStore = request.app.state.users
        await asyncio.to_thread(users.end_session, principal.session_hash)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/session")
def session(request: Request, principal: Caller) -> dict[str, Any]:
    """Who this is, what they may do, and (for a browser session) its CSRF token."""
    session_id = request.cookies.get(SESSION_COOKIE)
    csrf = csrf_token(session_id) if principal.method == "session" and session_id else None
    return _session_view(principal, principal.method, csrf)
