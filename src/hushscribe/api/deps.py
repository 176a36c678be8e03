"""Named dependencies: what a route needs, resolved once per request."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Request

from hushscribe.errors import Unauthorized
from hushscribe.jobs.blobs import BlobStore
from hushscribe.jobs.queue import JobQueue
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


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


def get_owner(request: Request) -> str:
    """The owner a request acts for, from its API key. Every key is compared, in constant time,
    so the answer and its timing do not depend on which key (if any) was close."""
    settings = get_settings(request)
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    owner = None
    if scheme.lower() == "bearer" and token:
        presented = _digest(token.strip())
        for name, key in settings.auth.api_keys.items():
            if hmac.compare_digest(presented, _digest(key.get_secret_value())):
                owner = name
    if owner is not None:
        return owner
    if settings.auth.allow_anonymous and not header:
        return "anonymous"
    raise Unauthorized("missing or invalid API key; send `Authorization: Bearer KEY`")


SettingsDep = Annotated[Settings, Depends(get_settings)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
BlobsDep = Annotated[BlobStore, Depends(get_blobs)]
Owner = Annotated[str, Depends(get_owner)]
