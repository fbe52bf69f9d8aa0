"""Logging: the text and JSON formats, and one access-log line per HTTP request.

``configure`` sets the process's root handler once (``serve`` calls it). In the JSON format
every record is one JSON object on one line, with the request's fields (``method``, ``path``,
``status``, ``duration_ms``, ``request_id``, ``client``) as keys of their own on the request
lines. The request lines come from :class:`RequestLogMiddleware`, a plain ASGI middleware
(never ``BaseHTTPMiddleware``: it would buffer the long-polls), so uvicorn's own access log is
turned off.
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import UTC, datetime
from typing import IO, Any, Literal

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from policy_pubsub.metrics import Metrics

ACCESS_LOGGER = "policy_pubsub.access"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REQUEST_FIELDS = ("method", "path", "status", "duration_ms", "request_id", "client")
# The status logged when no answer was started: the client left (a long-poll it gave up on)
# or the server stopped first; nginx's "client closed request".
NO_ANSWER = 499

access_log = logging.getLogger(ACCESS_LOGGER)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, RFC 3339), level, logger, message, the request
    fields when the record has them, and the exception's traceback when there is one.
    """

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, tz=UTC)
        data: dict[str, Any] = {
            "time": moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in REQUEST_FIELDS:
            if key in record.__dict__:
                data[key] = record.__dict__[key]
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exception"] = record.exc_text
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(data, default=str).decode()


def formatter(log_format: Literal["text", "json"]) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure(
    level: str, log_format: Literal["text", "json"], stream: IO[str] | None = None
) -> None:
    """Send every record at ``level`` and above to ``stream`` (stderr), in ``log_format``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


class RequestLogMiddleware:
    """Logs one line per HTTP request once it is answered: method, path, status, duration in
    ms, the ``X-ONAP-RequestID`` (set in the scope's state by ``RequestIdMiddleware``, which
    must come first) and the client's address; and counts it in the metrics.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        except Exception:
            status = status or 500
            raise
        finally:
            self._log(scope, status or NO_ANSWER, time.perf_counter() - started)

    def _log(self, scope: Scope, status: int, seconds: float) -> None:
        method = str(scope.get("method", ""))
        if self.metrics is not None:
            self.metrics.request(method, status)
        if not access_log.isEnabledFor(logging.INFO):
            return
        path = str(scope.get("path", ""))
        duration_ms = round(seconds * 1000, 3)
        request_id = scope.get("state", {}).get("request_id")
        client = scope.get("client")
        address = f"{client[0]}:{client[1]}" if client else None
        access_log.info(
            '%s "%s %s" %d %.1f ms request_id=%s',
            address or "-",
            method,
            path,
            status,
            duration_ms,
            request_id or "-",
            extra={
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": duration_ms,
                "request_id": request_id,
                "client": address,
            },
        )


__all__ = ["JsonFormatter", "RequestLogMiddleware", "configure", "formatter"]
