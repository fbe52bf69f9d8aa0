"""The one middleware every HTTP request passes: its request id, its count and its log line.

A plain ASGI middleware (never ``BaseHTTPMiddleware``: it would buffer the long-polls), and
one rather than three: each layer costs every request a coroutine frame and a ``send``
wrapper, and every held long-poll keeps them for as long as it is held.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from policy_pubsub import constants
from policy_pubsub.api.errors import ApiError, error_response
from policy_pubsub.api.table import RouteTable
from policy_pubsub.logs import NO_ANSWER, log_request
from policy_pubsub.metrics import HTTP_METHODS, Metrics

_HEADER = constants.REQUEST_ID_HEADER.lower().encode()


# A percent sign not followed by two hex digits, in the path as sent.
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def path_problem(scope: Scope) -> str | None:
    """Why the request's path is refused before routing (400), or None: a control character
    or NUL once decoded (``%0A`` and the like: no route, rule or log line should see one), or
    a malformed percent-encoding.
    """
    if not scope["path"].isprintable():
        return "The path holds a control character (after percent-decoding); nothing was done."
    raw = scope.get("raw_path")
    if raw and b"%" in raw and _BAD_ESCAPE.search(raw):
        return "The path holds a malformed percent-encoding: % must be followed by two hex digits."
    return None


class RequestMiddleware:
    """For every HTTP request: echoes ``X-ONAP-RequestID`` on the answer, or makes one up, and
    puts it in the scope's state (``request_id``); refuses a path with control characters or
    a malformed percent-encoding (:func:`path_problem`, 400 in the shape ``table`` gives the
    path) before anything routes it; once the request is over, counts it in the metrics and
    logs its line (:func:`policy_pubsub.logs.log_request`).
    """

    def __init__(
        self, app: ASGIApp, metrics: Metrics | None = None, table: RouteTable | None = None
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.table = table
        # The request counter's child of each (method, status), as Metrics.request labels
        # them: finding the child takes longer than counting (a lock, a tuple, strings).
        self._counts: dict[tuple[str, int], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = ""
        for name, value in scope["headers"]:
            if name == _HEADER:
                request_id = value.decode("latin-1")
                break
        if not request_id:
            request_id = new_request_id()
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state["request_id"] = request_id
        answer = _Answer(send, request_id)
        try:
            problem = path_problem(scope)
            if problem is not None and self.table is not None:
                refusal = error_response(self.table.shape(scope), ApiError(400, problem))
                await refusal(scope, receive, answer)
                return
            await self.app(scope, receive, answer)
        except Exception:
            answer.status = answer.status or 500
            raise
        finally:
            status = int(answer.status) or NO_ANSWER
            if self.metrics is not None:
                self._count(self.metrics, str(scope.get("method", "")), status)
            log_request(scope, status, time.perf_counter() - started)

    def _count(self, metrics: Metrics, method: str, status: int) -> None:
        key = (method if method in HTTP_METHODS else "other", status)
        child = self._counts.get(key)
        if child is None:
            child = self._counts[key] = metrics.requests.labels(key[0], str(status))
        child.inc()


class _Answer:
    """The ``send`` handed on: notes the status and puts the request id in the headers. An
    object rather than a closure, as every held long-poll keeps one.
    """

    __slots__ = ("request_id", "send", "status")

    def __init__(self, send: Send, request_id: str) -> None:
        self.send = send
        self.request_id = request_id
        self.status = 0

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            header = (_HEADER, self.request_id.encode("latin-1"))
            message["headers"] = _with_header(message.get("headers", ()), header)
        await self.send(message)


def new_request_id() -> str:
    """A random UUID (version 4), as ``str(uuid.uuid4())`` writes it, in half the time."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
    hexa = raw.hex()
    return f"{hexa[:8]}-{hexa[8:12]}-{hexa[12:16]}-{hexa[16:20]}-{hexa[20:]}"


def _with_header(
    headers: list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...],
    header: tuple[bytes, bytes],
) -> list[tuple[bytes, bytes]]:
    """The response's headers with the request id's: in place of one the endpoint set."""
    found = [h for h in headers if h[0].lower() != header[0]]
    found.append(header)
    return found


__all__ = ["RequestMiddleware", "new_request_id"]
