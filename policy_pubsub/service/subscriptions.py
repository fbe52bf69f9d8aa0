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

from policy_pubsub import constants
from policy_pubsub.exceptions import NotFound, SubscriptionTaken
from policy_pubsub.metrics import Metrics
from policy_pubsub.models import SubscriptionRequest
from policy_pubsub.routers import Router
from policy_pubsub.service.outlets import Outlet
from policy_pubsub.service.snapshots import (
    matching_policies,
    oversized,
    snapshot_message,
    subscribe_snapshot,
)
from policy_pubsub.service.state import State, Subscription
from policy_pubsub.store import Store, SubscriptionRow, now_ms
from policy_pubsub.subscription_record import SubscriptionRecord
from policy_pubsub.timestamps import rfc3339

__all__ = ["Resent", "SubscribeResult", "Subscriptions", "TopicCheck"]

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


@dataclass(frozen=True, slots=True)
class Resent:
    """Fresh snapshots committed for dead letters' subscribers: the revision they carry
    (None when none of the subscribers exists any more), the subscribers they went to, and
    those with no subscription, whose dead letters were removed with nothing to send.
    """

    revision: int | None
    subscriber_ids: list[str]
    unknown: list[str]
    removed: int  # dead letters removed


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
                committing = time.perf_counter()
            self._metrics.commit_seconds.observe(time.perf_counter() - committing)
            state.subscription_removed(subscriber_id, revision)
        log.info("revision %d: subscription %s removed", revision, subscriber_id)
        return revision

    async def resend(self, subscriber_ids: Sequence[str]) -> Resent:
        """Publish a fresh snapshot to each of the subscribers, at a new revision, and
        remove their dead letters, in one transaction. A new revision rather than the
        current one: a subscriber's snapshot revisions must keep increasing whatever commits
        meanwhile, and the new de-duplication id cannot be mistaken by the router for the
        refused copy. A snapshot over the router's largest message is ``SnapshotTooLarge``
        (nothing changed, the dead letters stay).
        """
        wanted = sorted(set(subscriber_ids))
        if not wanted:
            return Resent(None, [], [], 0)
        state = self._state
        async with state.writing:
            async with self._store.write() as tx:
                revision = await state.take_revision(tx)
                found = [state.subscriptions[s] for s in wanted if s in state.subscriptions]
                unknown = [s for s in wanted if s not in state.subscriptions]
                if not found:
                    await tx.rollback()  # nothing to publish: no revision taken
                else:
                    at = now_ms()
                    stamp = rfc3339(at) or ""
                    with self._metrics.matching_seconds.time():
                        messages = [
                            snapshot_message(
                                s,
                                revision,
                                constants.EVENT_UPDATE,
                                stamp,
                                orjson.dumps(matching_policies(state.policies, s.selector)),
                            )
                            for s in found
                        ]
                    refused = oversized(messages, self._router.max_message_bytes)
                    if refused is not None:
                        raise refused
                    written = await self._outlet.write(tx, messages, at)
                    await tx.mark_published([s.subscriber_id for s in found], revision, at)
                    removed = await tx.remove_dead_letters(wanted)
            if found:
                state.resent((s.subscriber_id for s in found), revision, at)
                self._outlet.after_commit(written)
                self._metrics.snapshots.labels(constants.EVENT_UPDATE).inc(len(found))
        if not found:
            async with self._store.write() as tx:
                removed = await tx.remove_dead_letters(wanted)
            return Resent(None, [], unknown, removed)
        log.info(
            "revision %d: fresh snapshots for %d subscribers with dead letters (%s)",
            revision,
            len(found),
            ", ".join(s.subscriber_id for s in found[:5]) + (" ..." if len(found) > 5 else ""),
        )
        return Resent(revision, [s.subscriber_id for s in found], unknown, removed)

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
