"""Logging: the text and JSON formats, and one access-log line per HTTP request.

``configure`` sets the process's root handler once (``serve`` calls it). In the JSON format
every record is one JSON object on one line, with the request's fields (``method``, ``path``,
``status``, ``duration_ms``, ``request_id``, ``client``) as keys of their own on the request
lines. The request lines come from :func:`log_request`, called by the request middleware
(:mod:`policy_pubsub.api.middleware`) once a request is over, so uvicorn's own access log is
turned off.

Which level a request line gets (:func:`request_level`): INFO for what an operator needs to
see (every change: PAP pushes, subscribe and unsubscribe, publishes; every answer from 400 up,
and 499 when the client left first; any read slower than ``SLOW_SECONDS``), DEBUG for the
reads that went well (``GET``, the decision API, each answered long-poll), which on a busy
server are nearly all requests. The metrics count every request whatever its level.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any, Literal

import orjson
from starlette.types import Scope

ACCESS_LOGGER = "policy_pubsub.access"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REQUEST_FIELDS = ("method", "path", "status", "duration_ms", "request_id", "client")
# The status logged when no answer was started: the client left (a long-poll it gave up on)
# or the server stopped first; nginx's "client closed request".
NO_ANSWER = 499
# A read that took this long logs its line at INFO, as changes and errors do.
SLOW_SECONDS = 1.0
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The scope-state key an endpoint sets (``mark_request``) and its values.
REQUEST_KIND = "request_kind"
READ = "read"
LONG_POLL = "long-poll"

access_log = logging.getLogger(ACCESS_LOGGER)

# Control characters a client can put in a path, an id or a header (a %0A in a path arrives
# as a newline) and their escapes, so no one can forge a line in the text log.
_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F)}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})


class TextFormatter(logging.Formatter):
    """The text format, one line per record: control characters in the message are escaped
    (``\\n``, ``\\x00``); a traceback, when there is one, follows on lines of its own.
    """

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        return super().formatMessage(record).translate(_ESCAPES)


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
    return JsonFormatter() if log_format == "json" else TextFormatter()


CHATTY_LIBRARIES = ("httpx", "alembic.runtime.plugins")


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
    # Libraries that log every request they make (httpx: each DMaaP publish and read, each
    # PAP topic poll) or every step of a start (alembic's plugins) say it at DEBUG only.
    below = logging.NOTSET if root.level <= logging.DEBUG else logging.WARNING
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(below)


def mark_request(scope: Scope, kind: str) -> None:
    """Tell how the request's line is logged: ``READ`` for an endpoint that changes nothing
    whatever its method, ``LONG_POLL`` for a long-poll.
    """
    state = scope.get("state")
    if state is None:
        state = scope["state"] = {}
    state[REQUEST_KIND] = kind


def request_level(method: str, status: int, seconds: float, kind: str | None) -> int:
    """The level of a request's line: INFO for a change, an error (any status from 400, 499
    included) or a slow read; DEBUG for the rest, the reads that went well (among them every
    answered long-poll, whose duration is mostly its hold, and the decision API).
    """
    if status >= 400:
        return logging.INFO
    if kind == LONG_POLL:
        return logging.DEBUG
    if seconds >= SLOW_SECONDS:
        return logging.INFO
    if kind == READ or method in READ_METHODS:
        return logging.DEBUG
    return logging.INFO


def log_request(scope: Scope, status: int, seconds: float) -> None:
    """The line of an answered request (``status`` 499 when it was not): method, path,
    status, duration in ms, the ``X-ONAP-RequestID`` (from the scope's state) and the client's
    address, at the level :func:`request_level` gives.
    """
    method = str(scope.get("method", ""))
    state = scope.get("state") or {}
    level = request_level(method, status, seconds, state.get(REQUEST_KIND))
    if not access_log.isEnabledFor(level):
        return
    path = str(scope.get("path", ""))
    duration_ms = round(seconds * 1000, 3)
    request_id = state.get("request_id")
    client = scope.get("client")
    address = f"{client[0]}:{client[1]}" if client else None
    access_log.log(
        level,
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


__all__ = [
    "LONG_POLL",
    "READ",
    "JsonFormatter",
    "TextFormatter",
    "configure",
    "formatter",
    "log_request",
    "mark_request",
    "request_level",
]
