"""Authentication before routing for everything under ``/v1``.

The routers check the key too (``Depends(get_owner)``), but only once a route matched: without a
key, ``/v1/nope`` answered 404 and ``PUT /v1/models`` 405 while real routes answered 401, so a
caller with no key could map the API. Here any request under ``/v1`` without a valid key gets the
same 401, whatever its path or method, before the router looks at it.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from hushscribe.api.deps import get_owner
from hushscribe.errors import Unauthorized

PREFIX = "/v1"


def guarded(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


class AuthGate:
    """ASGI middleware: 401 for a request under ``/v1`` that ``get_owner`` refuses."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and guarded(scope["path"]):
            try:
                get_owner(Request(scope))
            except Unauthorized as exc:
                response = JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
