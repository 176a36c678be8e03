"""The source-address allowlist, applied before anything else looks at a request.

It is the outermost middleware: a request from an address outside ``network.allow`` gets 403 before
authentication (so keys cannot be tried from there), before routing (so the API cannot be mapped)
and before its body is read (so a refused client cannot make us store or parse an upload). The
address comes from :func:`hushscribe.security.network.client_address`, which believes
``X-Forwarded-For`` only from ``network.trusted_proxies``. Later code (rate limits, audit) reads the
address decided here from ``request.state.client_ip`` instead of deciding again.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from hushscribe.errors import AddressNotAllowed
from hushscribe.security.network import client_address, is_allowed
from hushscribe.settings import Settings

MESSAGE = "this address may not use the service; ask the administrator to add it to network.allow"
"""Says what to do without repeating the address or the header it came from: the answer must not
echo what a client wrote, and a refused client learns nothing about how it was judged."""
WEBSOCKET_POLICY_VIOLATION = 1008


class NetworkGate:
    """ASGI middleware: 403 (or WebSocket close 1008) for a client outside ``network.allow``."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.allow = list(settings.network.allow)
        self.trusted = list(settings.network.trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        address = self._address(scope)
        if address is None:
            if scope["type"] == "websocket":  # refused before accept: the handshake gets 403
                await send({"type": "websocket.close", "code": WEBSOCKET_POLICY_VIOLATION})
                return
            refused = AddressNotAllowed(MESSAGE)
            # The body is never read: Connection: close ends the request without waiting for it.
            response = JSONResponse(
                refused.body(), status_code=refused.status, headers={"Connection": "close"}
            )
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["client_ip"] = address
        await self.app(scope, receive, send)

    def _address(self, scope: Scope) -> str | None:
        """The client's address as text when it may come in; None when it may not (also when
        the connection has no IP peer at all: nothing to judge is no reason to let it in)."""
        client = scope.get("client")
        peer = str(client[0]) if client else ""
        forwarded = [
            value.decode("latin-1")
            for name, value in scope.get("headers", ())
            if name.lower() == b"x-forwarded-for"
        ]
        try:
            ip = client_address(peer, forwarded, self.trusted)
        except ValueError:
            return None
        return str(ip) if is_allowed(ip, self.allow) else None


def client_ip(request: HTTPConnection) -> str:
    """The client's address as :class:`NetworkGate` decided it (the socket's peer when the gate
    did not run, as in an app built without it)."""
    decided = getattr(request.state, "client_ip", None)
    if isinstance(decided, str):
        return decided
    return request.client.host if request.client else ""
