"""Plain ASGI middleware (never BaseHTTPMiddleware: it would buffer the long-polls)."""

from __future__ import annotations

import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from policy_pubsub import constants

_HEADER = constants.REQUEST_ID_HEADER.lower().encode()


class RequestIdMiddleware:
    """Echoes ``X-ONAP-RequestID``, or makes one up, on every answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = next(
            (value.decode("latin-1") for name, value in scope["headers"] if name == _HEADER),
            None,
        ) or str(uuid.uuid4())
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[constants.REQUEST_ID_HEADER] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)
