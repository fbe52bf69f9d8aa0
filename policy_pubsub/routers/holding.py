"""Held reads: the long-polls a router keeps open until there is something to answer.

Every backend holds a read the same way. The read takes a waiter, a future of its own, before
it looks for messages, so a wake that comes while it looks is not lost; finding nothing, it
holds on that waiter until the first of: its topic is woken (:meth:`HeldReads.wake`), its
deadline passes, the client leaves (``gone``), something else the backend waits on completes
(``until``), or the router drains. Whichever comes first completes the waiter.

An idle held read costs a suspended coroutine and its waiter, and nothing polls: not
``asyncio.wait`` (a set, a waiter and a callback per future, on every held read), no callback
on a future all reads share (removing 10,000 of those one by one is quadratic), and no timer
per read: deadlines share one timer per ``EXPIRY_SLOT`` (a timer per held read cost about
0.6 KB each, BENCHMARKS.md 2).
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

# Held reads time out at their deadline or up to this much later, all those of one slot by one
# timer.
EXPIRY_SLOT = 0.05  # seconds
# Waiters completed in the first event-loop turn of a wake. Each later turn completes as many
# as fit in WAKE_TURN_SECONDS of CPU time, judged from what the turn before took: an answer
# costs 0.1-0.3 ms of CPU on a quiet machine and up to 1 ms on a loaded one, so a fixed batch
# (50 before) made turns of 5-15 ms on the one and 25-50 ms on the other (BENCHMARKS.md 2).
WAKE_BATCH = 50
WAKE_TURN_SECONDS = 0.008
WAKE_BATCH_MIN = 4
WAKE_BATCH_MAX = 200


class HeldReads:
    """The reads one router holds, by topic: counts them and ends each at the first of its
    wake, its deadline, its client leaving and the router draining.

    A waiter taken with :meth:`waiter` must be given to :meth:`hold` or :meth:`discard`.
    Waiters taken with no topic are ended only by their own deadline, ``gone``, ``until`` or a
    drain.
    """

    def __init__(self) -> None:
        self._count = 0
        self._draining = False
        self._waiters: dict[str | None, set[asyncio.Future[None]]] = {}
        # deadline slot -> its timer and the waiters whose deadlines fall in it
        self._expiries: dict[int, tuple[asyncio.TimerHandle, set[asyncio.Future[None]]]] = {}

    @property
    def count(self) -> int:
        """How many reads are held (waiting in :meth:`hold`) now."""
        return self._count

    @property
    def draining(self) -> bool:
        """True from :meth:`drain` until :meth:`start`: reads answer at once."""
        return self._draining

    def start(self) -> None:
        """Hold reads again (a router that starts after it drained)."""
        self._draining = False

    def waiter(self, topic: str | None = None) -> asyncio.Future[None]:
        """A waiter for one read, which :meth:`wake` of ``topic`` (or :meth:`drain`)
        completes from now on: take it before looking for messages.
        """
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.get(topic)
        if waiters is None:
            waiters = self._waiters[topic] = set()
        waiters.add(waiter)
        return waiter

    def discard(self, topic: str | None, waiter: asyncio.Future[None]) -> None:
        """Forget a waiter (its read answered without holding, or is over); idempotent."""
        waiters = self._waiters.get(topic)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del self._waiters[topic]

    def over(self, deadline: float | None, gone: asyncio.Future[None] | None) -> bool:
        """True when a read must answer now: the router drains, the client left, or the
        deadline (event-loop time) passed.
        """
        if self._draining or (gone is not None and gone.done()):
            return True
        return deadline is not None and asyncio.get_running_loop().time() >= deadline

    async def hold(
        self,
        topic: str | None,
        waiter: asyncio.Future[None],
        *,
        deadline: float | None = None,
        gone: asyncio.Future[None] | None = None,
        until: asyncio.Future[Any] | None = None,
    ) -> bool:
        """Hold the read until ``waiter`` completes: woken, at ``deadline`` (event-loop time,
        or up to ``EXPIRY_SLOT`` later), when ``gone`` or ``until`` completes, or on a drain.
        The waiter is forgotten when this returns. Returns False when the client left (the
        read answers empty at once), True when the read should look again.
        """
        expiring = None
        if deadline is not None:
            expiring = self._expire_at(asyncio.get_running_loop(), deadline, waiter)
        release = functools.partial(_release, waiter)
        if gone is not None:
            gone.add_done_callback(release)
        if until is not None:
            until.add_done_callback(release)
        self._count += 1
        try:
            await waiter
        finally:
            self._count -= 1
            if expiring is not None:
                expiring.discard(waiter)
            if gone is not None:
                gone.remove_done_callback(release)
            if until is not None:
                until.remove_done_callback(release)
            self.discard(topic, waiter)
        return gone is None or not gone.done()

    def wake(self, topics: Iterable[str]) -> None:
        """End the holds of every read of these topics; they look again."""
        woken: list[asyncio.Future[None]] = []
        for topic in topics:
            waiters = self._waiters.pop(topic, None)
            if waiters is not None:
                woken.extend(waiters)
        _wake(woken)

    def wake_all(self) -> None:
        """End every hold; the reads look again (after a reconnect that may have lost wakes)."""
        woken = [waiter for waiters in self._waiters.values() for waiter in waiters]
        self._waiters.clear()
        _wake(woken)

    def drain(self) -> None:
        """End every hold, and answer every read at once until :meth:`start`."""
        self._draining = True
        for timer, _ in self._expiries.values():
            timer.cancel()
        self._expiries.clear()
        self.wake_all()

    def _expire_at(
        self, loop: asyncio.AbstractEventLoop, deadline: float, waiter: asyncio.Future[None]
    ) -> set[asyncio.Future[None]]:
        """Have ``waiter`` completed at ``deadline``, or up to ``EXPIRY_SLOT`` later, by the
        slot's one timer. Returns the slot's set, which the read leaves when it is over.
        """
        slot = math.ceil(deadline / EXPIRY_SLOT)
        entry = self._expiries.get(slot)
        if entry is None:
            timer = loop.call_at(slot * EXPIRY_SLOT, self._expire, slot)
            entry = self._expiries[slot] = (timer, set())
        entry[1].add(waiter)
        return entry[1]

    def _expire(self, slot: int) -> None:
        entry = self._expiries.pop(slot, None)
        if entry is not None:
            _wake(list(entry[1]))


def _release(waiter: asyncio.Future[None], _: object = None) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _wake(
    waiters: Sequence[asyncio.Future[None]],
    start: int = 0,
    size: int = WAKE_BATCH,
    last: float | None = None,
) -> None:
    """Complete ``waiters`` from ``start`` on, a batch of ``size`` per event-loop turn: a
    push that wakes 10,000 held reads then lets timers and other requests run between
    batches instead of after all of them.

    ``last``: the event loop thread's CPU time when the previous batch was completed. One
    loop turn ran since, mostly the reads that batch woke (CPU time, not wall time: on a
    loaded machine the wall time also counts other processes' turns): the batch shrinks (at
    most by half a turn) or grows (at most by half again) towards what fits in
    ``WAKE_TURN_SECONDS``.
    """
    now = time.thread_time()
    if last is not None:
        fits = int(size * WAKE_TURN_SECONDS / max(now - last, 1e-6))
        size = max(WAKE_BATCH_MIN, size // 2, min(WAKE_BATCH_MAX, size + size // 2, fits))
    woken = 0
    end = len(waiters)
    while start < end and woken < size:
        waiter = waiters[start]
        start += 1
        if not waiter.done():  # (one its deadline or its client ended costs nothing)
            waiter.set_result(None)
            woken += 1
    if start < end:
        asyncio.get_running_loop().call_soon(_wake, waiters, start, size, now)


__all__ = ["EXPIRY_SLOT", "WAKE_BATCH", "WAKE_TURN_SECONDS", "HeldReads"]
