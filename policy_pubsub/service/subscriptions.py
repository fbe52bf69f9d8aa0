"""Subscriptions: subscribe (insert or update, with its starting snapshot), unsubscribe, and
the reads of the subscriber table and of its delivery status.

Each subscribe and unsubscribe is a transaction of its own with its own revision; they are
not grouped like policy changes (a subscribe answers with the subscriber's policies, and
subscribers come one at a time).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from policy_pubsub.exceptions import NotFound, SubscriptionTaken
from policy_pubsub.metrics import Metrics
from policy_pubsub.models import SubscriptionRequest
from policy_pubsub.routers import Router
from policy_pubsub.service.outlets import Outlet
from policy_pubsub.service.snapshots import matching_policies, oversized, subscribe_snapshot
from policy_pubsub.service.state import State, Subscription
from policy_pubsub.store import Store, SubscriptionRow, now_ms
from policy_pubsub.subscription_record import SubscriptionRecord

__all__ = ["SubscribeResult", "Subscriptions", "TopicCheck"]

# Whether the caller may use a topic (its auth rules); None where anyone may.
TopicCheck = Callable[[str], bool]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SubscribeResult:
    """A committed subscribe: whether it created the subscription, the subscription as
    stored, and the policies of its starting snapshot.
    """

    created: bool
    subscription: Subscription
    policies: dict[str, Any]


class Subscriptions:
    """The subscriber table: its writes, each with a revision, and its reads."""

    def __init__(
        self, state: State, store: Store, router: Router, outlet: Outlet, metrics: Metrics
    ) -> None:
        self._state = state
        self._store = store
        self._router = router
        self._outlet = outlet
        self._metrics = metrics

    async def subscribe(
        self,
        subscriber_id: str,
        request: SubscriptionRequest,
        may_use: TopicCheck | None = None,
    ) -> SubscribeResult:
        """Insert or update a subscription and publish its starting snapshot, in one
        transaction. An update keeps the subscription's creation time. With ``may_use``, an
        existing subscription on a topic it refuses is not replaced (``SubscriptionTaken``):
        decided under the write lock, so two callers racing for one id cannot both win. A
        starting snapshot larger than the router's largest message is ``SnapshotTooLarge``,
        and changes nothing.
        """
        record = SubscriptionRecord(
            subscriber_id,
            request.subscriber_topic,
            tuple(f.to_wire() for f in request.policy_filters),
            request.action,
            request.onap_name,
            request.onap_component,
            request.onap_instance,
        ).to_wire()
        state = self._state
        async with state.writing:
            async with self._store.write() as tx:
                revision = await state.take_revision(tx)
                existing = state.subscriptions.get(subscriber_id)
                if existing and may_use is not None and not may_use(existing.topic):
                    raise SubscriptionTaken(subscriber_id)
                at = now_ms()
                subscription = Subscription.make(
                    subscriber_id,
                    record,
                    revision=revision,
                    created_at=existing.created_at if existing else at,
                    updated_at=at,
                    last_revision=revision,
                    last_published_at=at,
                )
                with self._metrics.matching_seconds.time():
                    policies = matching_policies(state.policies, subscription.selector)
                    message = subscribe_snapshot(subscription, revision, at, policies)
                refused = oversized([message], self._router.max_message_bytes)
                if refused is not None:
                    # Raised in the transaction: it rolls back, the revision is not taken.
                    log.warning("refused subscription %s: %s", subscriber_id, refused.message)
                    raise refused
                await tx.put_subscription(
                    SubscriptionRow(
                        subscriber_id,
                        subscription.topic,
                        orjson.dumps(record).decode(),
                        revision,
                        subscription.created_at,
                        at,
                        None,
                        None,
                    )
                )
                if existing and existing.topic != subscription.topic:
                    await self._outlet.left(tx, subscriber_id, existing.topic)
                written = await self._outlet.write(tx, [message], at)
                await tx.mark_published([subscriber_id], revision, at)
                committing = time.perf_counter()
            self._metrics.commit_seconds.observe(time.perf_counter() - committing)
            state.subscription_put(subscription)
            self._outlet.after_commit(written)
        log.info(
            "revision %d: %s subscription %s on topic %s (%d policies)",
            revision,
            "updated" if existing else "new",
            subscriber_id,
            subscription.topic,
            len(policies),
        )
        return SubscribeResult(existing is None, subscription, policies)

    async def unsubscribe(self, subscriber_id: str, may_use: TopicCheck | None = None) -> int:
        """Delete a subscription; ``NotFound`` if unknown, or (with ``may_use``) on a topic it
        refuses, decided under the write lock. Returns the new revision.
        """
        state = self._state
        async with state.writing:
            async with self._store.write() as tx:
                revision = await state.take_revision(tx)
                existing = state.subscriptions.get(subscriber_id)
                if existing is None or (may_use is not None and not may_use(existing.topic)):
                    raise NotFound("subscription", subscriber_id)
                await tx.delete_subscription(subscriber_id)
                await self._outlet.left(tx, subscriber_id, existing.topic)
                committing = time.perf_counter()
            self._metrics.commit_seconds.observe(time.perf_counter() - committing)
            state.subscription_removed(subscriber_id, revision)
        log.info("revision %d: subscription %s removed", revision, subscriber_id)
        return revision

    async def get(self, subscriber_id: str) -> Subscription:
        """A subscription as stored; ``NotFound`` if unknown."""
        await self._state.catch_up()
        found = self._state.subscriptions.get(subscriber_id)
        if found is None:
            raise NotFound("subscription", subscriber_id)
        return found

    async def with_policies(self, subscriber_id: str) -> tuple[Subscription, dict[str, Any]]:
        """A subscription and the policies of its current snapshot, read from one state with
        nothing in between, so its ``last_revision`` labels exactly those policies (a change
        that altered them would have published a newer snapshot to it, and raised
        ``last_revision``, in the same step). ``NotFound`` if unknown.
        """
        found = await self.get(subscriber_id)
        return found, matching_policies(self._state.policies, found.selector)

    async def listing(self, topic: str | None = None) -> list[Subscription]:
        """Every subscription, or those on ``topic``, by subscriber id."""
        await self._state.catch_up()
        return sorted(
            (s for s in self._state.subscriptions.values() if topic is None or s.topic == topic),
            key=lambda s: s.subscriber_id,
        )

    async def last_consumed(self, topic: str) -> int | None:
        """When a consumer group last consumed from the topic."""
        stats = await self._router.stats(topic)
        return max(
            (g.last_consumed_at for g in stats.consumer_groups if g.last_consumed_at is not None),
            default=None,
        )

    async def stale(
        self, subscriptions: Sequence[Subscription], seconds: float
    ) -> list[Subscription]:
        """Those whose topic has held a message no consumer group read for ``seconds``."""
        cutoff = now_ms() - int(seconds * 1000)
        verdict: dict[str, bool] = {}
        for topic in {s.topic for s in subscriptions}:
            try:
                stats = await self._router.stats(topic)
            except NotFound:
                verdict[topic] = False
                continue
            verdict[topic] = stats.oldest_unread_at is not None and stats.oldest_unread_at <= cutoff
        return [s for s in subscriptions if verdict[s.topic]]
