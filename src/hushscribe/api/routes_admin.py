"""Users (admins), API keys (everyone's own; admins any), and the service's status (admins).

Whose keys a call may touch is decided in the store's queries (``user_id`` or, for admins only,
``None`` for everyone), not by filtering afterwards.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from hushscribe.api.access import Caller
from hushscribe.api.deps import get_keys, get_users
from hushscribe.api.network_gate import client_ip
from hushscribe.errors import Forbidden, HushscribeError, InvalidRequest, KeyNotFound
from hushscribe.security.decisions import Decision, record
from hushscribe.security.keys import parse_duration
from hushscribe.security.principal import Principal
from hushscribe.security.users import check_password, check_role

router = APIRouter(prefix="/v1", tags=["admin"])


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(max_length=128)
    password: str = Field(max_length=1024)
    role: str = "user"


class UserChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str | None = None
    disabled: bool | None = None
    password: str | None = Field(None, max_length=1024)


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=128)
    scopes: list[str] | None = Field(None, max_length=8)
    expires_in: str | None = Field(None, max_length=16, description="e.g. 90d, 12h")
    user: str | None = Field(None, max_length=128, description="admins: whose key")


def _audit(
    request: Request, principal: Principal, action: str, target: str, **details: Any
) -> None:
    record(
        Decision(
            action, "ok", client_ip(request), principal.username, principal.method, target,
            details, user_id=principal.user_id, key_id=principal.key_id,
        )
    )  # fmt: skip


@router.get("/users")
def list_users(request: Request, principal: Caller) -> dict[str, Any]:
    return {"object": "list", "data": [u.view() for u in get_users(request).list()]}


@router.post("/users", status_code=201)
def add_user(request: Request, principal: Caller, body: NewUser) -> dict[str, Any]:
    users = get_users(request)
    user = users.add(body.username, body.password, body.role)
    try:
        _audit(request, principal, "user_changed", user.username, change="created", role=user.role)
    except HushscribeError:
        users.remove(user.id)  # not recorded, so not done
        raise
    return user.view()


@router.patch("/users/{username}")
def change_user(
    request: Request, principal: Caller, username: str, body: UserChange
) -> dict[str, Any]:
    users = get_users(request)
    user = users.named(username)
    if user.id == principal.user_id and (body.disabled or body.role not in (None, "admin")):
        raise InvalidRequest("you cannot disable yourself or give up your own admin role")
    changes: dict[str, Any] = {}
    if body.role is not None:
        changes["role"] = check_role(body.role)
    if body.disabled is not None:
        changes["disabled"] = body.disabled
    if body.password is not None:
        check_password(body.password)
        if user.source != "local":
            raise InvalidRequest(f"{user.username!r} signs in through the directory (LDAP)")
        changes["credential_reset"] = True
    # Checked, then recorded, then done: a change the audit log cannot take is not made.
    _audit(request, principal, "user_changed", user.username, **changes)
    if body.role is not None:
        user = users.set_role(user.id, body.role)
    if body.disabled is not None:
        user = users.set_disabled(user.id, body.disabled)
    if body.password is not None:
        user = users.set_password(user.id, body.password)
    return user.view()


def _whose(request: Request, principal: Principal, user: str | None) -> str | None:
    """The user id a key call acts on: one's own; another's (or ``None``: all) for admins."""
    if principal.user_id.startswith(("static:", "anonymous")):
        raise Forbidden("keys from the configuration cannot manage API keys; sign in as a user")
    if user is None:
        return principal.user_id
    if not principal.can("admin"):
        raise Forbidden("not allowed: only admins manage other users' keys")
    return None if user == "*" else get_users(request).named(user).id


@router.get("/keys")
def list_keys(
    request: Request,
    principal: Caller,
    user: Annotated[str | None, Query(max_length=128, description="admins: a user, or *")] = None,
) -> dict[str, Any]:
    owner = _whose(request, principal, user)
    return {"object": "list", "data": [k.view() for k in get_keys(request).list(owner)]}


@router.post("/keys", status_code=201)
def create_key(request: Request, principal: Caller, body: NewKey) -> dict[str, Any]:
    """A new API key; the key itself is in this answer only (``key``), never again."""
    owner_id = _whose(request, principal, body.user) or principal.user_id
    owner = get_users(request).get(owner_id)
    if owner is None or owner.disabled:
        raise InvalidRequest("keys are made for existing, enabled users")
    expires = parse_duration(body.expires_in) if body.expires_in else None
    keys = get_keys(request)
    key, made = keys.create(owner.id, owner.role, body.name, body.scopes, expires)
    try:
        _audit(request, principal, "key_created", made.id, owner=owner.username, scopes=made.scopes)
    except HushscribeError:
        keys.revoke(made.id, None)  # never shown, never usable: as if not made
        raise
    return {**made.view(), "key": key}


@router.delete("/keys/{key_id}")
def revoke_key(request: Request, principal: Caller, key_id: str) -> dict[str, Any]:
    owner = None if principal.can("admin") else _whose(request, principal, None)
    keys = get_keys(request)
    found = keys.get(key_id, owner)
    if found is None:
        raise KeyNotFound(f"no API key {key_id[:40]!r}")
    _audit(request, principal, "key_revoked", found.id, owner=found.username)
    return keys.revoke(key_id, owner).view()


@router.get("/status")
async def status(request: Request, principal: Caller) -> dict[str, Any]:
    """Workers, the queue and readiness, in full (``/readyz`` tells the public only a status)."""
    settings = request.app.state.settings
    registry = request.app.state.registry
    queue = request.app.state.queue
    alive = await asyncio.to_thread(registry.alive, within_s=settings.jobs.lease_s)
    counts = await asyncio.to_thread(queue.counts_by_status)
    return {
        "workers": [{"id": w.id, "host": w.host, "models": w.models} for w in alive],
        "jobs": counts,
        "default_model": settings.engine.default_model,
        "gpu": None,  # devices and their memory arrive with GPU management ([G])
    }
