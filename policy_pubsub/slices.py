"""Long synchronous work cut into slices, the event loop running between them.

A push to 10,000 subscribers builds 10,000 snapshots, writes 10,000 rows, records 10,000
marks and fills 10,000 tails: each a loop of a few microseconds per item, tens of
milliseconds in all, during which no timer fires and no other request is served (the event
loop's lag, BENCHMARKS.md 2). Such a loop counts its items with :class:`Slices` and, once a
slice has run ``SLICE_SECONDS``, lets the loop run one turn::

    slices = Slices()
    for item in items:
        ...
        if slices.due():
            await slices.pause()

Whoever slices its work must hold what keeps others from seeing it half done (a push holds
the state's write lock throughout).
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["SLICE_SECONDS", "Slices"]

#: How long a slice of synchronous work runs before the event loop gets a turn.
SLICE_SECONDS = 0.005
#: Items between two looks at the clock.
CHECK_EVERY = 32


class Slices:
    """Says when a loop's current slice has run long enough (:meth:`due`), and lets the event
    loop run one turn before the next slice (:meth:`pause`).
    """

    __slots__ = ("_left", "_seconds", "_until", "pauses")

    def __init__(self, seconds: float | None = None) -> None:
        self._seconds = SLICE_SECONDS if seconds is None else seconds
        self._until = time.perf_counter() + self._seconds
        self._left = CHECK_EVERY
        #: How many times the work let the loop run.
        self.pauses = 0

    def due(self) -> bool:
        """One more item done: True when the slice has run its time (looked up every
        ``CHECK_EVERY`` items).
        """
        self._left -= 1
        if self._left > 0:
            return False
        self._left = CHECK_EVERY
        return time.perf_counter() >= self._until

    def over(self) -> bool:
        """True when the slice has run its time (for loops whose every step is a batch)."""
        return time.perf_counter() >= self._until

    async def pause(self) -> None:
        """Let the event loop run one turn; the next slice starts when it is back."""
        self.pauses += 1
        await asyncio.sleep(0)
        self._until = time.perf_counter() + self._seconds
