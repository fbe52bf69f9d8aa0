"""Warnings that repeat, logged once and then summarised.

A client that keeps sending a wrong password, or a replayed webhook signature, would write
one WARNING per request, and an operator looking for what happened would find the same line
a thousand times. :class:`RepeatedWarnings` writes the first warning of a kind (a key such as
the client's host and the reason) as it comes, counts the repeats, and writes one summary
line ``summary_seconds`` later if there were any, then one a window for as long as they
keep coming. A window without a repeat ends the burst silently; the next one starts anew.

At most ``max_kinds`` kinds are followed at once; past that, new kinds share one burst named
``other``, so a client that varies its requests cannot grow the table without bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable
from dataclasses import dataclass

SUMMARY_SECONDS = 60.0
MAX_KINDS = 1000
OTHER = "other"


@dataclass(slots=True)
class _Burst:
    what: str  # the first warning of the burst, for the summary
    repeats: int = 0


class RepeatedWarnings:
    """Warnings on ``logger`` (at ``level``, WARNING unless told), each kind logged once and
    then summarised once a window.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        summary_seconds: float = SUMMARY_SECONDS,
        max_kinds: int = MAX_KINDS,
        level: int = logging.WARNING,
    ) -> None:
        self._log = logger
        self._level = level
        self._summary_seconds = summary_seconds
        self._max_kinds = max_kinds
        self._bursts: dict[Hashable, _Burst] = {}

    def warn(self, kind: Hashable, message: str, *args: object) -> None:
        """Log ``message % args`` at WARNING unless a burst of ``kind`` is under way, in which
        case count it for the burst's summary. Call it from the event loop.
        """
        if kind not in self._bursts and len(self._bursts) >= self._max_kinds:
            kind = OTHER
        burst = self._bursts.get(kind)
        if burst is not None:
            burst.repeats += 1
            return
        what = message % args if args else message
        self._log.log(self._level, "%s", what)
        self._bursts[kind] = _Burst(what)
        self._arm(kind)

    def _arm(self, kind: Hashable) -> None:
        asyncio.get_running_loop().call_later(self._summary_seconds, self._summarise, kind)

    def _summarise(self, kind: Hashable) -> None:
        burst = self._bursts.get(kind)
        if burst is None:
            return
        if not burst.repeats:
            del self._bursts[kind]
            return
        self._log.log(
            self._level,
            "%d more like this in the last %.0f s: %s",
            burst.repeats,
            self._summary_seconds,
            burst.what,
        )
        burst.repeats = 0
        self._arm(kind)


__all__ = ["RepeatedWarnings"]
