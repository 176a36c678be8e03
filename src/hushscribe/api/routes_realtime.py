"""``/v1/realtime?intent=transcription``: live captions over a WebSocket, in the shape of OpenAI's
Realtime transcription sessions, decoded by the workers (:class:`StreamLink`).

The access middleware has admitted the caller (key, or this origin's session cookie; allowed
address) before this runs. Then: the limits on streams (429 before the upgrade),
``session.created``, and the client's events until it stops, leaves, idles or runs out of time.
Every event sent gets an ``event_id``; a bad client event gets an ``error`` event and the stream
goes on. The audio is recorded to the blob store as it arrives: ``hushscribe.stop`` makes it a
job of its owner; a client that just leaves leaves nothing behind. One audit record per stream,
at its end.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections import Counter

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse

from hushscribe.api.access import principal_of
from hushscribe.api.realtime_events import ClientError, error_event
from hushscribe.api.realtime_session import (
    POLICY,
    SERVER_ERROR,
    TRY_LATER,
    Ending,
    LiveStream,
    stamp,
)
from hushscribe.api.submit import RETRY_AFTER_S
from hushscribe.errors import HushscribeError, error_body
from hushscribe.settings import Settings

log = logging.getLogger("hushscribe.realtime")
router = APIRouter(tags=["realtime"])


class Slots:
    """Streams held in this process, per principal and in all (``streams.max_per_user``,
    ``streams.max_total``)."""

    def __init__(self) -> None:
        self.by_user: Counter[str] = Counter()

    def take(self, user_id: str, per_user: int, total: int) -> bool:
        if self.by_user[user_id] >= per_user or sum(self.by_user.values()) >= total:
            return False
        self.by_user[user_id] += 1
        return True

    def release(self, user_id: str) -> None:
        self.by_user[user_id] -= 1
        if self.by_user[user_id] <= 0:
            del self.by_user[user_id]


def _slots(websocket: WebSocket) -> Slots:
    state = websocket.app.state
    if not isinstance(getattr(state, "realtime_slots", None), Slots):
        state.realtime_slots = Slots()
    slots: Slots = state.realtime_slots
    return slots


async def _refuse(websocket: WebSocket, status: int, close: int, code: str, message: str) -> None:
    """Refused before the upgrade (HTTP ``status``) where the server can say so; else accepted,
    told with an ``error`` event, and closed with ``close``."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 429 else None
        kind = "rate_limit_error" if status == 429 else "invalid_request_error"
        body = JSONResponse(error_body(message, kind, code), status_code=status, headers=headers)
        await websocket.send_denial_response(body)
        return
    await websocket.accept()
    exc = ClientError(code, message)
    await websocket.send_json(stamp(error_event(exc)))
    await websocket.close(close)


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket) -> None:
    """A live transcription session (see the module's docstring)."""
    settings: Settings = websocket.app.state.settings
    principal = principal_of(websocket)
    if principal is None:  # the access middleware lets none through; never serve one anyway
        await websocket.close(POLICY)
        return
    if not settings.streams.enabled:
        await _refuse(websocket, 404, POLICY, "streams_disabled", "live captions are off here")
        return
    intent = websocket.query_params.get("intent")
    if intent != "transcription":
        await websocket.accept()
        exc = ClientError("unsupported_intent", "this endpoint serves ?intent=transcription only",
                          param="intent")  # fmt: skip
        await websocket.send_json(stamp(error_event(exc)))
        await websocket.close(POLICY)
        return
    limits, slots = settings.streams, _slots(websocket)
    if not slots.take(principal.user_id, limits.max_per_user, limits.max_total):
        message = (
            f"too many live streams (at most {limits.max_per_user} each, {limits.max_total} in "
            "all); close one or retry in a little while"
        )
        await _refuse(websocket, 429, TRY_LATER, "rate_limit_exceeded", message)
        return
    stream = LiveStream(websocket, principal, settings)
    try:
        await websocket.accept()
        await stream.run()
    except Exception:  # a fault of ours: the client gets an error id, the log the trace
        error_id = secrets.token_hex(8)
        log.exception("live stream %s failed (error id %s)", stream.session_id, error_id)
        stream.ending = Ending("server_error", "failed")
        message = f"the stream failed on the server (error id {error_id})"
        with contextlib.suppress(Exception):
            await stream.close(
                SERVER_ERROR, ClientError("server_error", message, type_="server_error")
            )
    finally:
        slots.release(principal.user_id)
        await stream.cleanup()
    if not stream.recorded:
        with contextlib.suppress(HushscribeError):  # logged: the stream is over either way
            await stream.record()
