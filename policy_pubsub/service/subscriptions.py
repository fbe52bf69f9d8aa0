"""Subscriptions: subscribe (insert or update, with its starting snapshot), unsubscribe, and
the reads of the subscriber table and of its delivery status.

Subscribes and unsubscribes share commits the way policy changes do
(:class:`~policy_pubsub.service.batches.Batches`): those that queue up behind a transaction
commit together in the next one, each with its own revision in arrival order, its own
starting snapshot and its own answer, as if it had been alone; one commit (one fsync)
acknowledges them all. A fleet of components restarting together subscribes at the rate of
the store's commits times the batch, not at the rate of its commits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from policy_pubsub import constants
from policy_pubsub.exceptions import (
    NotFound,
    PolicyPubSubError,
    RouterUnavailable,
    SubscriptionTaken,
)
from policy_pubsub.matching import Selector
from policy_pubsub.metrics import Metrics
from policy_pubsub.models import SubscriptionRequest
from policy_pubsub.routers import OutMessage, Router
from policy_pubsub.service.batches import Batches
from policy_pubsub.service.outlets import Outlet
from policy_pubsub.service.snapshots import (
    matching_policies,
    oversized,
    snapshot_message,
)
from policy_pubsub.service.state import State, Subscription
from policy_pubsub.store import Store, SubscriptionRow, now_ms
from policy_pubsub.subscription_record import SubscriptionRecord
from policy_pubsub.timestamps import rfc3339

__all__ = [
    "MAX_SUBSCRIPTION_CHANGES_PER_COMMIT",
    "Resent",
    "SubscribeResult",
    "Subscriptions",
    "TopicCheck",
]

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


#: Subscribes and unsubscribes committed together at most.
MAX_SUBSCRIPTION_CHANGES_PER_COMMIT = 256


@dataclass(frozen=True, slots=True)
class _Subscribe:
    subscriber_id: str
    record: dict[str, Any]  # the wire fields of the subscription record
    may_use: TopicCheck | None


@dataclass(frozen=True, slots=True)
class _Unsubscribe:
    subscriber_id: str
    may_use: TopicCheck | None


_Request = _Subscribe | _Unsubscribe
_Answer = SubscribeResult | int  # an unsubscribe answers with its revision


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
        self._batches: Batches[_Request, _Answer] = Batches(
            state.writing, self.commit, MAX_SUBSCRIPTION_CHANGES_PER_COMMIT
        )
        self._leaving: set[asyncio.Task[None]] = set()  # routers told a subscription left

    @property
    def queued(self) -> int:
        """How many subscribes and unsubscribes wait for a transaction."""
        return self._batches.queued

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
        answer = await self._batches.submit(_Subscribe(subscriber_id, record, may_use))
        assert isinstance(answer, SubscribeResult)
        return answer

    async def unsubscribe(self, subscriber_id: str, may_use: TopicCheck | None = None) -> int:
        """Delete a subscription; ``NotFound`` if unknown, or (with ``may_use``) on a topic it
        refuses, decided under the write lock. Returns the new revision.
        """
        answer = await self._batches.submit(_Unsubscribe(subscriber_id, may_use))
        assert isinstance(answer, int)
        return answer

    async def commit(self, batch: Sequence[_Request]) -> list[_Answer | PolicyPubSubError]:
        """Commit the subscribes and unsubscribes in one transaction, each with its own
        revision in order, and return each one's answer or refusal (a refused one takes no
        revision and writes nothing). Call it holding the state's write lock.
        """
        state = self._state
        async with self._store.write() as tx:
            # A revision for each request, taken at once; those refused hand theirs back.
            first = await state.take_revision(tx, len(batch))
            at = now_ms()
            planned = _Planned(first, rfc3339(at) or "")
            for request in batch:
                if isinstance(request, _Subscribe):
                    planned.answers.append(self._plan_subscribe(planned, request, at))
                else:
                    planned.answers.append(_plan_unsubscribe(planned, state, request))
            if planned.last < first:
                await tx.rollback()  # the revisions taken go back: nothing is written
                return planned.answers
            await tx.advance_revision(planned.last)
            await tx.subscribe(
                [
                    SubscriptionRow(
                        s.subscriber_id,
                        s.topic,
                        (s.envelope + b"}").decode(),  # the record as JSON
                        s.revision,
                        s.created_at,
                        s.updated_at,
                        s.last_revision,
                        s.last_published_at,
                    )
                    for s in planned.after.values()
                    if s is not None
                ]
            )
            await tx.delete_subscriptions(
                {
                    subscriber_id: planned.revisions[subscriber_id]
                    for subscriber_id, after in planned.after.items()
                    if after is None
                },
                at,
            )
            emptied = [
                topic
                for subscriber_id, topic in _left(state, planned)
                if await self._outlet.left(tx, subscriber_id, topic)
            ]
            written = (
                await self._outlet.write(tx, planned.messages, at) if planned.messages else None
            )
            committing = time.perf_counter()
        if emptied:
            # Right after the commit, before another commit can use these topics again.
            self._outlet.emptied(emptied)
        self._metrics.commit_seconds.observe(time.perf_counter() - committing)
        for subscriber_id, topic in _left(state, planned):
            self._forget(subscriber_id, topic, deleted=planned.after[subscriber_id] is None)
        for answer in planned.answers:
            if isinstance(answer, SubscribeResult):
                state.subscription_put(answer.subscription)
            elif isinstance(answer, int):
                state.subscription_removed(planned.removed[answer], answer)
        if written is not None:
            self._outlet.after_commit(written)
        for answer in planned.answers:
            if isinstance(answer, SubscribeResult):
                subscription = answer.subscription
                log.info(
                    "revision %d: %s subscription %s on topic %s (%d policies)",
                    subscription.revision,
                    "new" if answer.created else "updated",
                    subscription.subscriber_id,
                    subscription.topic,
                    len(answer.policies),
                )
            elif isinstance(answer, int):
                log.info("revision %d: subscription %s removed", answer, planned.removed[answer])
        return planned.answers

    def _forget(self, subscriber_id: str, topic: str, *, deleted: bool) -> None:
        """Tell the router, in the background, that a subscription left a topic: its queue
        (RabbitMQ) goes, without holding up the writes behind this one.
        """
        task = asyncio.create_task(self._left(subscriber_id, topic, deleted=deleted))
        self._leaving.add(task)
        task.add_done_callback(self._leaving.discard)

    async def _left(self, subscriber_id: str, topic: str, *, deleted: bool) -> None:
        try:
            await self._router.subscription_left(subscriber_id, topic, deleted=deleted)
        except RouterUnavailable as exc:
            log.warning(
                "subscription %s left topic %s, but the router could not forget it: %s",
                subscriber_id,
                topic,
                exc,
            )

    def _plan_subscribe(
        self, planned: _Planned, request: _Subscribe, at: int
    ) -> SubscribeResult | PolicyPubSubError:
        """The subscription a subscribe writes and its starting snapshot; or its refusal."""
        subscriber_id = request.subscriber_id
        existing = planned.current(self._state, subscriber_id)
        if existing and request.may_use is not None and not request.may_use(existing.topic):
            return SubscriptionTaken(subscriber_id)
        revision = planned.last + 1
        subscription = Subscription.make(
            subscriber_id,
            request.record,
            revision=revision,
            created_at=existing.created_at if existing else at,
            updated_at=at,
            last_revision=revision,
            last_published_at=at,
        )
        with self._metrics.matching_seconds.time():
            policies, fragment = planned.matching(self._state, subscription.selector)
            message = snapshot_message(
                subscription, revision, constants.EVENT_SUBSCRIBE, planned.stamp, fragment
            )
        refused = oversized([message], self._router.max_message_bytes)
        if refused is not None:
            log.warning("refused subscription %s: %s", subscriber_id, refused.message)
            return refused
        planned.take(subscriber_id, subscription, revision)
        planned.messages.append(message)
        return SubscribeResult(existing is None, subscription, policies)

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


@dataclass(slots=True)
class _Planned:
    """What one transaction of subscribes and unsubscribes commits, planned in order:
    revisions from ``first`` on, each subscriber's subscription after it (None: deleted)
    with the revision of its last change, the starting snapshots, and each one's answer.
    """

    first: int
    stamp: str  # when, as the snapshots say it
    last: int = 0
    after: dict[str, Subscription | None] = field(default_factory=dict)
    revisions: dict[str, int] = field(default_factory=dict)
    removed: dict[int, str] = field(default_factory=dict)  # revision -> subscriber id
    messages: list[OutMessage] = field(default_factory=list)
    answers: list[_Answer | PolicyPubSubError] = field(default_factory=list)
    #: The policies each selector matches, and their JSON: subscribers with the same filters
    #: in one transaction share them (no subscribe changes the policies).
    matched: dict[Selector, tuple[dict[str, Any], bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.last = self.first - 1

    def matching(self, state: State, selector: Selector) -> tuple[dict[str, Any], bytes]:
        """The policies the selector matches, and their JSON."""
        found = self.matched.get(selector)
        if found is None:
            policies = matching_policies(state.policies, selector)
            found = self.matched[selector] = (policies, orjson.dumps(policies))
        return found

    def current(self, state: State, subscriber_id: str) -> Subscription | None:
        """The subscription as the changes planned so far leave it."""
        if subscriber_id in self.after:
            return self.after[subscriber_id]
        return state.subscriptions.get(subscriber_id)

    def take(self, subscriber_id: str, after: Subscription | None, revision: int) -> None:
        self.after[subscriber_id] = after
        self.revisions[subscriber_id] = revision
        self.last = revision


def _left(state: State, planned: _Planned) -> list[tuple[str, str]]:
    """The subscriptions of the batch that leave a topic: (subscriber, the topic it had
    before the batch), for those deleted or moved to another topic.
    """
    left = []
    for subscriber_id, after in planned.after.items():
        before = state.subscriptions.get(subscriber_id)
        if before is not None and (after is None or after.topic != before.topic):
            left.append((subscriber_id, before.topic))
    return left


def _plan_unsubscribe(planned: _Planned, state: State, request: _Unsubscribe) -> int | NotFound:
    """The revision an unsubscribe takes; or ``NotFound``."""
    subscriber_id = request.subscriber_id
    existing = planned.current(state, subscriber_id)
    if existing is None or (request.may_use is not None and not request.may_use(existing.topic)):
        return NotFound("subscription", subscriber_id)
    revision = planned.last + 1
    planned.take(subscriber_id, None, revision)
    planned.removed[revision] = subscriber_id
    return revision
