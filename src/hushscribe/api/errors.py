"""One JSON error shape for every response (OpenAI's), whatever went wrong.

Expected errors carry their own status and code. Validation errors become 400
``invalid_request_error``. Anything unexpected becomes 500 with an error id; the client never sees
the exception text, the log gets the trace under that id.
"""

from __future__ import annotations

import logging
import secrets

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hushscribe.errors import HushscribeError, TooLarge, error_body

log = logging.getLogger("hushscribe.api")

_HTTP_CODES = {
    401: ("authentication_error", "unauthorized"),
    403: ("permission_error", "forbidden"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
}


def install(app: FastAPI) -> None:
    @app.exception_handler(HushscribeError)
    async def _expected(request: Request, exc: HushscribeError) -> JSONResponse:
        headers = dict(exc.headers)
        if isinstance(exc, TooLarge):
            headers["Connection"] = "close"  # the rest of the body is not read
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        return JSONResponse(
            error_body(f"invalid request: {problems}", "invalid_request_error", "invalid_request"),
            status_code=400,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_, code = _HTTP_CODES.get(exc.status_code, ("invalid_request_error", "http_error"))
        return JSONResponse(
            error_body(str(exc.detail), type_, code),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        error_id = secrets.token_hex(8)
        log.exception("unexpected error %s on %s %s", error_id, request.method, request.url.path)
        return JSONResponse(
            error_body(
                f"internal error; quote error id {error_id} to your administrator",
                "server_error",
                "internal_error",
            ),
            status_code=500,
        )
