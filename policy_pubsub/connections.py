"""Deadlines for clients that send a request slowly, or never finish it.

uvicorn bounds the idle time between two requests on a keep-alive connection, but not a
connection that opens and stays silent, one that sends its headers a byte a second, or a body
trickled in slowly: only the process's file limit would bound them. :func:`guarded` extends the
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
    """A subclass of ``base`` (uvicorn's chosen HTTP protocol) that runs it under ``limits``;
    pass it to ``uvicorn.Config(http=...)``.

    What a request costs it is kept small, since every request pays it: a subclass rather
    than a wrapper (the bytes reach the parser without a call in between, and a connection
    is one object), and no timer per connection. The connections of each phase wait in
    an ordered dict, oldest first (a phase has one deadline, so they are also in deadline
    order), and one timer for all of them fires at the earliest deadline; a request that
    completes in time only enters and leaves a dict. Attributes of its own start with
    ``_guard`` so that they cannot collide with the parser's.
    """
    # connection -> when it entered the phase (loop time), oldest first
    waiting: dict[_Phase, OrderedDict[Any, float]] = {
        _Phase.HEADERS: OrderedDict(),
        _Phase.BODY: OrderedDict(),
    }
    seconds = {_Phase.HEADERS: limits.header_seconds, _Phase.BODY: limits.body_seconds}
    sweeper: list[asyncio.TimerHandle | None] = [None]
    closed = _Tally()

    def oldest(phase: _Phase) -> tuple[Any, float] | None:
        for entry in waiting[phase].items():
            return entry
        return None

    def schedule(loop: asyncio.AbstractEventLoop) -> None:
        """Have the timer fire at the earliest deadline, unless it is set already."""
        if sweeper[0] is not None:
            return
        deadlines = []
        for phase in waiting:
            found = oldest(phase)
            if found is not None:
                deadlines.append(found[1] + seconds[phase])
        if deadlines:
            sweeper[0] = loop.call_at(min(deadlines), sweep, loop)

    def sweep(loop: asyncio.AbstractEventLoop) -> None:
        """Close every connection past its phase's deadline."""
        sweeper[0] = None
        now = loop.time()
        for phase in waiting:
            while (found := oldest(phase)) is not None and found[1] + seconds[phase] <= now:
                found[0]._guard_expire()  # leaves the dict
        schedule(loop)

    class Guarded(base, GuardedProtocol):  # type: ignore[valid-type,misc]
        http_protocol_class = base

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._guard_phase = _Phase.COMPLETE
            self._guard_cycle_before: _Cycle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self._guard_enter(_Phase.HEADERS)

        def data_received(self, data: bytes) -> None:
            if self._guard_phase is _Phase.COMPLETE:
                self._guard_enter(_Phase.HEADERS)  # the next request on a keep-alive connection
            super().data_received(data)
            self._guard_follow()

        def connection_lost(self, exc: Exception | None) -> None:
            self._guard_enter(_Phase.COMPLETE)
            super().connection_lost(exc)

        def _guard_follow(self) -> None:
            """Move to the phase the parser reached with the bytes it was just fed."""
            cycle: _Cycle | None = self.cycle
            if cycle is None or (
                self._guard_phase is _Phase.HEADERS and cycle is self._guard_cycle_before
            ):
                return  # the new request's headers are not all in yet
            if cycle.more_body and not cycle.response_complete:
                if self._guard_phase is not _Phase.BODY:
                    self._guard_enter(_Phase.BODY)
            else:
                self._guard_enter(_Phase.COMPLETE)

        def _guard_enter(self, phase: _Phase) -> None:
            before = self._guard_phase
            if before is not _Phase.COMPLETE:
                waiting[before].pop(self, None)
            self._guard_phase = phase
            # The previous request's cycle is only needed while the next one's headers come
            # in (to tell the two apart); held longer, it would keep every idle connection's
            # last scope, headers and events alive (about 4 KB each).
            self._guard_cycle_before = self.cycle if phase is _Phase.HEADERS else None
            if phase is _Phase.COMPLETE:
                return
            loop: asyncio.AbstractEventLoop = self.loop
            waiting[phase][self] = loop.time()
            schedule(loop)
            if len(waiting[_Phase.HEADERS]) + len(waiting[_Phase.BODY]) > limits.max_incomplete:
                closed.crowded += 1
                entries = [found for p in waiting if (found := oldest(p)) is not None]
                min(entries, key=lambda entry: entry[1])[0]._guard_close(answer=False)
                closed.report(limits)

        def _guard_expire(self) -> None:
            cycle: _Cycle | None = self.cycle
            answered = (
                self._guard_phase is _Phase.BODY and cycle is not None and cycle.response_started
            )
            if self._guard_phase is _Phase.HEADERS:
                closed.slow_headers += 1
            else:
                closed.slow_bodies += 1
            self._guard_close(answer=not answered)
            closed.report(limits)

        def _guard_close(self, *, answer: bool) -> None:
            self._guard_enter(_Phase.COMPLETE)
            # uvloop's TCP transport is not an asyncio.Transport subclass but has its methods.
            transport = cast(asyncio.Transport | None, getattr(self, "transport", None))
            if transport is None or transport.is_closing():
                return
            if answer:
                transport.write(_TIMEOUT_ANSWER)
            transport.close()

    return Guarded


__all__ = ["ConnectionLimits", "GuardedProtocol", "guarded"]
