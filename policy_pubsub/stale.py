"""Expiring stale subscriptions: those whose topic holds a message nobody has read for long.

Off unless ``expire_stale_after_seconds`` is set (``serve --expire-stale-after SECONDS``).
A background task looks every ``stale_check_interval_seconds`` and unsubscribes each stale
subscription through the service, so the removal takes a revision like any other, and logs
it at WARNING with its id and topic. "Stale" is what ``GET /decision/v1/subscription?stale=``
answers. With several replicas one at a time looks (a leader lock in the store,
:mod:`policy_pubsub.background`); a subscription removed meanwhile by a client is skipped.
"""

from __future__ import annotations

import logging

from policy_pubsub.background import Periodic
from policy_pubsub.exceptions import NotFound, RouterUnavailable, StoreUnavailable
from policy_pubsub.metrics import Metrics
from policy_pubsub.service import PolicyService
from policy_pubsub.store import Store

log = logging.getLogger(__name__)


class StaleExpiry:
    """Unsubscribes the subscriptions whose topic nobody has read for ``after`` seconds."""

    def __init__(
        self,
        service: PolicyService,
        store: Store,
        *,
        after: float,
        interval: float,
        metrics: Metrics | None = None,
    ) -> None:
        if after <= 0:
            raise ValueError("after must be a positive number of seconds")
        self._service = service
        self._after = after
        self._metrics = metrics
        # On a shared store one replica at a time looks (they would unsubscribe the same ones).
        self._job = Periodic(
            "stale subscription expiry",
            store,
            self.expire_once,
            interval=interval,
            expected=(StoreUnavailable, RouterUnavailable),
        )

    def start(self) -> None:
        """Start looking, every ``interval`` seconds, in the running event loop."""
        self._job.start()

    async def close(self) -> None:
        await self._job.close()

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


__all__ = ["StaleExpiry"]
