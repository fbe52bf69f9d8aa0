"""Deadlines for clients that send a request slowly, or never finish it.

uvicorn bounds the idle time between two requests on a keep-alive connection, but not a
connection that opens and stays silent, one that sends its headers a byte a second, or a body
trickled in slowly: only the process's file limit would bound them. :func:`guarded` wraps the
HTTP protocol uvicorn chose (httptools or h11) so that every connection is in one of three
phases:

- *waiting for headers*, from the moment it opens (or its previous answer was sent and more
  bytes arrived) until the request's headers are in: at most ``header_seconds``;
- *waiting for the body*, until the whole request body is in: at most ``body_seconds``;
- *complete*: the request is with the application, however long it takes (a held long-poll
  is a complete request), and no deadline of this module applies.

A connection past its deadline gets ``408 Request Timeout`` when nothing was answered yet and
is closed. At most ``max_incomplete`` connections may be waiting for headers or a body at
once; one more closes the one that has waited longest, so slow clients cannot crowd out
quick ones. The figures are the server's settings (README "Security").
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol, cast

log = logging.getLogger(__name__)

_TIMEOUT_TEXT = b"The request was not received in time.\n"
_TIMEOUT_ANSWER = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_TIMEOUT_TEXT), _TIMEOUT_TEXT)
)


@dataclass(frozen=True)
class ConnectionLimits:
    """How long a request may take to arrive, and how many may be arriving at once."""

    header_seconds: float
    body_seconds: float
    max_incomplete: int


class _Cycle(Protocol):
    response_started: bool
    response_complete: bool
    more_body: bool


class _HttpProtocol(Protocol):
    """What this module uses of uvicorn's protocol objects (both parsers have it)."""

    cycle: _Cycle | None

    def connection_made(self, transport: asyncio.BaseTransport) -> None: ...
    def connection_lost(self, exc: Exception | None) -> None: ...
    def data_received(self, data: bytes) -> None: ...
    def eof_received(self) -> bool | None: ...
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...


class _Phase(enum.Enum):
    HEADERS = "headers"
    BODY = "body"
    COMPLETE = "complete"


class _Tally:
    """Connections closed for being slow, logged as one line a minute at most rather than
    one line each (a flood of slow clients would otherwise flood the log).
    """

    EVERY_SECONDS = 60.0

    def __init__(self) -> None:
        self.slow_headers = self.slow_bodies = self.crowded = 0
        self.reported_at: float | None = None

    def report(self, limits: ConnectionLimits) -> None:
        now = time.monotonic()
        if self.reported_at is not None and now - self.reported_at < self.EVERY_SECONDS:
            return
        self.reported_at = now
        log.warning(
            "closed slow connections: %d without headers after %g s, %d without the whole body "
            "after %g s, %d past %d sending a request at once",
            self.slow_headers,
            limits.header_seconds,
            self.slow_bodies,
            limits.body_seconds,
            self.crowded,
            limits.max_incomplete,
        )
        self.slow_headers = self.slow_bodies = self.crowded = 0


class GuardedProtocol(asyncio.Protocol):
    """The base of :func:`guarded`'s classes: ``http_protocol_class`` is the protocol run."""

    http_protocol_class: type[asyncio.Protocol]


def guarded(base: type[asyncio.Protocol], limits: ConnectionLimits) -> type[GuardedProtocol]:
    """A protocol class that runs ``base`` (uvicorn's chosen HTTP protocol) under ``limits``;
    pass it to ``uvicorn.Config(http=...)``.
    """
    incomplete: OrderedDict[Guarded, None] = OrderedDict()
    closed = _Tally()

    class Guarded(GuardedProtocol):
        http_protocol_class = base

        def __init__(self, **kwargs: Any) -> None:
            self.inner = cast(_HttpProtocol, base(**kwargs))
            self.loop = asyncio.get_running_loop()
            self.transport: asyncio.Transport | None = None
            self.phase = _Phase.COMPLETE
            self.cycle_before: _Cycle | None = None
            self.timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            # uvloop's TCP transport is not an asyncio.Transport subclass but has its methods.
            self.transport = cast(asyncio.Transport, transport)
            self.inner.connection_made(transport)
            self._enter(_Phase.HEADERS)

        def data_received(self, data: bytes) -> None:
            if self.phase is _Phase.COMPLETE:
                self._enter(_Phase.HEADERS)  # the next request on a keep-alive connection
            self.inner.data_received(data)
            self._follow()

        def connection_lost(self, exc: Exception | None) -> None:
            self._enter(_Phase.COMPLETE)
            self.inner.connection_lost(exc)

        def eof_received(self) -> bool | None:
            return self.inner.eof_received()

        def pause_writing(self) -> None:
            self.inner.pause_writing()

        def resume_writing(self) -> None:
            self.inner.resume_writing()

        def _follow(self) -> None:
            """Move to the phase the parser reached with the bytes it was just fed."""
            cycle = self.inner.cycle
            if cycle is None or (self.phase is _Phase.HEADERS and cycle is self.cycle_before):
                return  # the new request's headers are not all in yet
            if cycle.more_body and not cycle.response_complete:
                if self.phase is not _Phase.BODY:
                    self._enter(_Phase.BODY)
            else:
                self._enter(_Phase.COMPLETE)

        def _enter(self, phase: _Phase) -> None:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            self.phase = phase
            if phase is _Phase.COMPLETE:
                incomplete.pop(self, None)
                return
            if phase is _Phase.HEADERS:
                self.cycle_before = self.inner.cycle
                seconds = limits.header_seconds
            else:
                seconds = limits.body_seconds
            self.timer = self.loop.call_later(seconds, self._expire)
            incomplete[self] = None
            incomplete.move_to_end(self)
            if len(incomplete) > limits.max_incomplete:
                closed.crowded += 1
                next(iter(incomplete))._close(answer=False)
                closed.report(limits)

        def _expire(self) -> None:
            self.timer = None
            cycle = self.inner.cycle
            answered = self.phase is _Phase.BODY and cycle is not None and cycle.response_started
            if self.phase is _Phase.HEADERS:
                closed.slow_headers += 1
            else:
                closed.slow_bodies += 1
            self._close(answer=not answered)
            closed.report(limits)

        def _close(self, *, answer: bool) -> None:
            self._enter(_Phase.COMPLETE)
            transport = self.transport
            if transport is None or transport.is_closing():
                return
            if answer:
                transport.write(_TIMEOUT_ANSWER)
            transport.close()

    return Guarded


__all__ = ["ConnectionLimits", "GuardedProtocol", "guarded"]
