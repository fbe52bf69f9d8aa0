"""Outages of the store and of the message router, logged once rather than once a request.

While a part is down every request that needs it is refused (503), which can be hundreds of
requests a minute. An :class:`Outage` turns them into three kinds of line: one WARNING when
the first request is refused (with the cause), a WARNING summary at most once every
``summary_seconds`` while it lasts (how long so far, how many refused), and one INFO when the
part answers again (how long it lasted, how many were refused). The end is found by probing
the part (its ``ping``) every ``probe_seconds`` from the first refusal on, so it is logged
even when no request comes to notice it. Each refusal is still counted in the metrics
(``store_errors_total``, ``router_errors_total``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from policy_pubsub.exceptions import PolicyPubSubError, RouterUnavailable, StoreUnavailable

log = logging.getLogger(__name__)

SUMMARY_SECONDS = 60.0
PROBE_SECONDS = 1.0

Probe = Callable[[], Awaitable[None]]


class Outage:
    """The outage of one part (``store`` or ``message router``), if there is one."""

    def __init__(
        self,
        part: str,
        *,
        summary_seconds: float = SUMMARY_SECONDS,
        probe_seconds: float = PROBE_SECONDS,
    ) -> None:
        self.part = part
        self.probe: Probe | None = None
        self._summary_seconds = summary_seconds
        self._probe_seconds = probe_seconds
        self.started_at: float | None = None
        self.refused_count = 0
        self._summarised_at = 0.0
        self._cause = ""
        self._watch: asyncio.Task[None] | None = None

    @property
    def ongoing(self) -> bool:
        return self.started_at is not None

    def refused(self, cause: str) -> None:
        """A request was refused because the part failed with ``cause``."""
        now = time.monotonic()
        self.refused_count += 1
        self._cause = cause
        if self.started_at is None:
            self.started_at = self._summarised_at = now
            log.warning(
                "the %s is unavailable: %s; requests that need it are refused (503) until it "
                "answers again",
                self.part,
                cause,
            )
            if self.probe is not None:
                self._watch = asyncio.create_task(
                    self._until_back(self.probe), name=f"policy-pubsub {self.part} outage"
                )
            return
        if now - self._summarised_at >= self._summary_seconds:
            self._summarised_at = now
            log.warning(
                "the %s has been unavailable for %.0f s; %d requests refused so far (%s)",
                self.part,
                now - self.started_at,
                self.refused_count,
                self._cause,
            )

    async def _until_back(self, probe: Probe) -> None:
        while True:
            await asyncio.sleep(self._probe_seconds)
            try:
                await asyncio.wait_for(probe(), self._probe_seconds * 5)
            except Exception:  # still down, whatever the driver says
                continue
            self._ended()
            return

    def _ended(self) -> None:
        if self.started_at is None:
            return
        log.info(
            "the %s answers again after %.1f s; %d requests were refused meanwhile",
            self.part,
            time.monotonic() - self.started_at,
            self.refused_count,
        )
        self.started_at = None
        self.refused_count = 0
        self._watch = None

    async def close(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch


class Outages:
    """The store's and the router's outages; ``refused`` takes the error a request met."""

    def __init__(self, **timing: float) -> None:
        self.store = Outage("store", **timing)
        self.router = Outage("message router", **timing)

    def start(self, store_probe: Probe, router_probe: Probe) -> None:
        """Give each part its probe, so the end of an outage is noticed (at start-up)."""
        self.store.probe = store_probe
        self.router.probe = router_probe

    def refused(self, exc: PolicyPubSubError) -> None:
        """Note a request refused because of ``exc``; other errors are not outages."""
        if isinstance(exc, StoreUnavailable):
            self.store.refused(exc.message)
        elif isinstance(exc, RouterUnavailable):
            self.router.refused(exc.message)

    async def close(self) -> None:
        await self.store.close()
        await self.router.close()


__all__ = ["Outage", "Outages"]
