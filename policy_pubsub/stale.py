"""Expiring stale subscriptions: those whose topic holds a message nobody has read for long.

Off unless ``expire_stale_after_seconds`` is set (``serve --expire-stale-after SECONDS``).
A background task looks every ``stale_check_interval_seconds`` and unsubscribes each stale
subscription through the service, so the removal takes a revision like any other, and logs
it at WARNING with its id and topic. "Stale" is what ``GET /decision/v1/subscription?stale=``
answers. With several replicas each one looks; a subscription another replica removed first
is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from policy_pubsub.exceptions import NotFound, RouterUnavailable, StoreUnavailable
from policy_pubsub.metrics import Metrics
from policy_pubsub.service import PolicyService

log = logging.getLogger(__name__)


class StaleExpiry:
    """Unsubscribes the subscriptions whose topic nobody has read for ``after`` seconds."""

    def __init__(
        self,
        service: PolicyService,
        *,
        after: float,
        interval: float,
        metrics: Metrics | None = None,
    ) -> None:
        if after <= 0 or interval <= 0:
            raise ValueError("after and interval must be positive numbers of seconds")
        self._service = service
        self._after = after
        self._interval = interval
        self._metrics = metrics
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start looking, every ``interval`` seconds, in the running event loop."""
        self._task = asyncio.create_task(self._run(), name="policy-pubsub stale expiry")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def expire_once(self) -> list[str]:
        """Unsubscribe every stale subscription now; the ids removed."""
        found = await self._service.stale(await self._service.subscriptions(), self._after)
        removed = []
        for subscription in found:
            try:
                # Judged again just before: it may have been read or re-subscribed meanwhile.
                now = await self._service.subscription(subscription.subscriber_id)
                if now.revision != subscription.revision or not await self._service.stale(
                    [now], self._after
                ):
                    continue
                revision = await self._service.unsubscribe(subscription.subscriber_id)
            except NotFound:
                continue  # removed meanwhile, by a client or another replica
            removed.append(subscription.subscriber_id)
            if self._metrics is not None:
                self._metrics.stale_expired.inc()
            log.warning(
                "expired stale subscription %s on topic %s: nobody read it for %g s (revision %d)",
                subscription.subscriber_id,
                subscription.topic,
                self._after,
                revision,
            )
        return removed

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.expire_once()
            except (StoreUnavailable, RouterUnavailable) as exc:
                log.warning("stale subscription expiry failed, will retry: %s", exc)
            except Exception:
                log.exception("stale subscription expiry failed, will retry")


__all__ = ["StaleExpiry"]
