"""Named dependencies: what a route needs, resolved once per request."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from hushscribe.api.access import get_principal
from hushscribe.jobs.blobs import BlobStore
from hushscribe.jobs.queue import JobQueue
from hushscribe.security.auditing import Auditor
from hushscribe.security.keys import KeyStore
from hushscribe.security.users import UserStore
from hushscribe.settings import Settings


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_queue(request: Request) -> JobQueue:
    queue: JobQueue = request.app.state.queue
    return queue


def get_blobs(request: Request) -> BlobStore:
    blobs: BlobStore = request.app.state.blobs
    return blobs


def get_users(request: Request) -> UserStore:
    users: UserStore = request.app.state.users
    return users


def get_keys(request: Request) -> KeyStore:
    keys: KeyStore = request.app.state.keys
    return keys


def audit(request: Request) -> Auditor:
    """The app's audit log (its ``event`` raises AuditUnavailable when it cannot write)."""
    auditor: Auditor = request.app.state.auditor
    return auditor


def get_owner(request: Request) -> str:
    """The user id a request acts for: the owner of the jobs it creates and may read."""
    return get_principal(request).user_id


SettingsDep = Annotated[Settings, Depends(get_settings)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
BlobsDep = Annotated[BlobStore, Depends(get_blobs)]
Owner = Annotated[str, Depends(get_owner)]
