"""The use cases: subscribe, unsubscribe, deploy, undeploy, decide, and the snapshots they cause.

Every change runs in one store transaction that takes the next store revision, writes the
change and appends a full snapshot for each affected subscriber. The in-memory indexes mirror
the committed tables: they are updated only after a commit, and rebuilt from the store whenever
its revision is not the one they reflect.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from policy_pubsub import constants
from policy_pubsub.exceptions import NotFound, PolicyPubSubError, StoreUnavailable
from policy_pubsub.matching import PolicyIndex, Selector, SubscriptionIndex
from policy_pubsub.metrics import Metrics
from policy_pubsub.models import PdpUpdate, PolicyFilter, SubscriptionRequest, ToscaPolicy
from policy_pubsub.relay import OutboxRelay
from policy_pubsub.routers import Router
from policy_pubsub.store import (
    OutMessage,
    PolicyRow,
    Snapshot,
    Store,
    SubscriptionRow,
    WriteTx,
    now_ms,
)
from policy_pubsub.store.database import load_all
from policy_pubsub.store.notify import REVISION_CHANNEL
from policy_pubsub.subscription_record import SubscriptionRecord

log = logging.getLogger(__name__)

# Policy changes committed together at most, when they queue up behind a transaction.
MAX_CHANGES_PER_COMMIT = 256


@dataclass(frozen=True, slots=True)
class Policy:
    """A deployed policy: its identity, and its body exactly as deployed."""

    policy_id: str
    version: str
    type: str
    type_version: str | None
    body: dict[str, Any]
    canonical: bytes  # sorted-key JSON of the body: equal bytes, identical policy

    @classmethod
    def from_model(cls, model: ToscaPolicy) -> Policy:
        body = model.model_dump(by_alias=True, exclude_unset=True)
        return cls._make(
            model.policy_id or "", model.policy_version or "", model.type, model.type_version, body
        )

    @classmethod
    def from_row(cls, row: PolicyRow) -> Policy:
        body = orjson.loads(row.body)
        return cls._make(
            row.policy_id, row.policy_version, row.policy_type, row.policy_type_version, body
        )

    @classmethod
    def _make(
        cls,
        policy_id: str,
        version: str,
        type_: str,
        type_version: str | None,
        body: dict[str, Any],
    ) -> Policy:
        canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        return cls(policy_id, version, type_, type_version, body, canonical)

    def ident(self) -> dict[str, str]:
        return {"policy-id": self.policy_id, "policy-version": self.version}


@dataclass(frozen=True, slots=True)
class Subscription:
    """A subscriber record as stored, with the selector its filters collapse to."""

    subscriber_id: str
    topic: str
    record: dict[str, Any]  # the wire fields of API.md, subscriber_id first
    selector: Selector
    revision: int
    created_at: int
    updated_at: int
    last_revision: int | None = None
    last_published_at: int | None = None
    envelope: bytes = field(default=b"", compare=False)  # the record as JSON, without "}"

    @classmethod
    def make(cls, subscriber_id: str, record: dict[str, Any], **kwargs: Any) -> Subscription:
        return cls(
            subscriber_id=subscriber_id,
            topic=record["subscriber_topic"],
            record=record,
            selector=Selector.from_filters(record["policy-filters"]),
            envelope=orjson.dumps(record)[:-1],
            **kwargs,
        )

    def published(self, revision: int, at: int) -> Subscription:
        """A copy that records a snapshot published at ``revision``. (The constructor, not
        ``dataclasses.replace``: a push can touch 10,000 subscriptions, and replace costs
        half as much again.)
        """
        return Subscription(
            subscriber_id=self.subscriber_id,
            topic=self.topic,
            record=self.record,
            selector=self.selector,
            revision=self.revision,
            created_at=self.created_at,
            updated_at=self.updated_at,
            last_revision=revision,
            last_published_at=at,
            envelope=self.envelope,
        )

    @classmethod
    def from_row(cls, row: SubscriptionRow) -> Subscription:
        return cls.make(
            row.subscriber_id,
            orjson.loads(row.body),
            revision=row.revision,
            created_at=row.created_at,
            updated_at=row.updated_at,
            last_revision=row.last_revision,
            last_published_at=row.last_published_at,
        )


@dataclass(frozen=True, slots=True)
class ChangeResult:
    revision: int
    deployed: list[dict[str, str]]
    undeployed: list[dict[str, str]]
    notified: int

    def to_wire(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "deployed": self.deployed,
            "undeployed": self.undeployed,
            "notified": self.notified,
        }


@dataclass(frozen=True, slots=True)
class SubscribeResult:
    created: bool
    subscription: Subscription
    policies: dict[str, Any]


@dataclass(slots=True)
class _Pending:
    """A policy change waiting for a transaction, and the future its caller awaits."""

    wanted: Sequence[Policy]
    undeploy: Sequence[tuple[str, str | None]]
    replace_all: bool
    require: str | None
    answer: asyncio.Future[ChangeResult]


@dataclass(frozen=True, slots=True)
class _Planned:
    """One change of a transaction: its revision, net change and snapshots."""

    revision: int
    changes: Mapping[str, tuple[Policy | None, Policy | None]]
    messages: list[OutMessage]
    notified: list[str]

    def result(self) -> ChangeResult:
        changes = self.changes.values()
        deployed = [new.ident() for _, new in changes if new is not None]
        undeployed = [old.ident() for old, new in changes if new is None and old is not None]
        return ChangeResult(self.revision, deployed, undeployed, len(self.notified))


class _Overlay:
    """The deployed policies as a transaction's changes so far leave them: the committed
    index with those changes laid over it. The index itself changes only after the commit.
    """

    def __init__(self, committed: PolicyIndex[Policy]) -> None:
        self._committed = committed
        self.changed: dict[str, Policy | None] = {}  # policy id -> after the transaction
        self.revisions: dict[str, int] = {}  # policy id -> revision of its last change
        self._added: PolicyIndex[Policy] = PolicyIndex()

    def get(self, policy_id: str) -> Policy | None:
        if policy_id in self.changed:
            return self.changed[policy_id]
        return self._committed.get(policy_id)

    def apply(self, policy_id: str, policy: Policy | None, revision: int) -> None:
        self.changed[policy_id] = policy
        self.revisions[policy_id] = revision
        if policy is None:
            self._added.remove(policy_id)
        else:
            self._added.put(policy_id, policy.type, policy)

    def ids(self) -> Iterator[str]:
        for policy_id, _ in self._committed.items():
            if policy_id not in self.changed:
                yield policy_id
        for policy_id, policy in self.changed.items():
            if policy is not None:
                yield policy_id

    def select(self, selector: Selector) -> set[str]:
        found = self._committed.select(selector)
        if self.changed:
            found.difference_update(self.changed)
            found |= self._added.select(selector)
        return found


class _NoChange(Exception):
    """Raised inside a write transaction to roll it back: the request changes nothing."""


def rfc3339(ms: int | None) -> str | None:
    if ms is None:
        return None
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


class PolicyService:
    """The server's use cases over a store and a router."""

    def __init__(
        self,
        store: Store,
        router: Router,
        relay: OutboxRelay | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        if not router.in_store and relay is None:
            raise ValueError("a router outside the store needs an outbox relay")
        self._metrics = metrics or Metrics()  # times matching and commits
        self._store = store
        self._router = router
        self._relay = relay
        self._revision = -1
        self._policies: PolicyIndex[Policy] = PolicyIndex()
        self._subscriptions: dict[str, Subscription] = {}
        self._index = SubscriptionIndex()
        # Held from a change's first statement until the indexes reflect its commit.
        self._write_lock = asyncio.Lock()
        self._queue: list[_Pending] = []  # policy changes waiting for the next transaction
        self._stale = False

    @property
    def revision(self) -> int:
        return self._revision

    async def start(self) -> None:
        notifications = self._store.notifications
        if notifications is not None:
            notifications.on(REVISION_CHANNEL, self._revision_committed)
            notifications.on_reconnect(self._mark_stale)
        self._rebuild(await self._store.load())
        log.info(
            "store at revision %d: %d policies, %d subscriptions",
            self._revision,
            len(self._policies),
            len(self._subscriptions),
        )

    def _rebuild(self, snapshot: Snapshot) -> None:
        policies: PolicyIndex[Policy] = PolicyIndex()
        for row in snapshot.policies:
            policy = Policy.from_row(row)
            policies.put(policy.policy_id, policy.type, policy)
        subscriptions = {r.subscriber_id: Subscription.from_row(r) for r in snapshot.subscriptions}
        index = SubscriptionIndex()
        for subscription in subscriptions.values():
            index.put(subscription.subscriber_id, subscription.selector)
        self._policies, self._subscriptions, self._index = policies, subscriptions, index
        self._revision = snapshot.revision

    def _revision_committed(self, payload: str) -> None:
        """Another writer (perhaps another replica) committed a revision."""
        if any(int(item) > self._revision for item in payload.split(",") if item.isdigit()):
            self._stale = True

    def _mark_stale(self) -> None:
        self._stale = True

    async def fresh(self) -> None:
        """Make the indexes reflect the store before a read. With one process (SQLite) they
        always do; replicas sharing a store re-read it when a notification says it moved on,
        and check its revision on every read while notifications are not arriving.
        """
        notifications = self._store.notifications
        if notifications is None or (notifications.connected and not self._stale):
            return
        async with self._write_lock:
            self._stale = False
            if await self._store.revision() != self._revision:
                self._rebuild(await self._store.load())

    async def _begin(self, tx: WriteTx) -> int:
        """Take the next revision; first catch up if another writer moved the store on."""
        revision = await tx.next_revision()
        if revision - 1 != self._revision:
            log.info("store moved from revision %d to %d: reloading", self._revision, revision - 1)
            snapshot = await load_all(tx.conn)
            self._rebuild(replace(snapshot, revision=revision - 1))
        return revision

    # -- policies ---------------------------------------------------------------------------

    async def deploy(self, policies: Sequence[ToscaPolicy]) -> ChangeResult:
        """Deploy (insert or replace) policies; identical ones change nothing."""
        return await self._change_policies(deploy=policies)

    async def undeploy(self, policy_id: str) -> ChangeResult:
        """Undeploy one policy; ``NotFound`` if it is not deployed."""
        return await self._change_policies(undeploy=[(policy_id, None)], require=policy_id)

    async def pdp_update(self, update: PdpUpdate) -> ChangeResult:
        """Apply a PDP_UPDATE: a delta, or (El Alto) the complete desired set."""
        if update.policies is not None:
            return await self._change_policies(deploy=update.policies, replace_all=True)
        undeploy = [
            (ident.name, None if ident.version is None else str(ident.version))
            for ident in update.policies_to_be_undeployed or ()
        ]
        return await self._change_policies(
            deploy=update.policies_to_be_deployed or (), undeploy=undeploy
        )

    async def _change_policies(
        self,
        *,
        deploy: Sequence[ToscaPolicy] = (),
        undeploy: Sequence[tuple[str, str | None]] = (),
        replace_all: bool = False,
        require: str | None = None,
    ) -> ChangeResult:
        """Queue the change and commit it with whatever else is queued (group commit).

        Changes that arrive while a transaction is committing wait for the write lock; the
        first of them to get it commits every queued change in one transaction, each with its
        own revision in arrival order and its own snapshots, so one commit (one fsync on
        SQLite) acknowledges them all.
        """
        wanted = [Policy.from_model(model) for model in deploy]
        pending = _Pending(
            wanted, undeploy, replace_all, require, asyncio.get_running_loop().create_future()
        )
        self._queue.append(pending)
        try:
            async with self._write_lock:
                if not pending.answer.done():
                    batch = self._queue[:MAX_CHANGES_PER_COMMIT]
                    del self._queue[:MAX_CHANGES_PER_COMMIT]
                    await self._commit_changes(batch)
        except asyncio.CancelledError:
            if pending in self._queue:
                self._queue.remove(pending)
            raise
        return pending.answer.result()

    async def _commit_changes(self, batch: Sequence[_Pending]) -> None:
        """Apply the queued changes in one transaction and answer each one's future."""
        try:
            await self._commit_changes_unguarded(batch)
        except BaseException as exc:
            failure: Exception = (
                exc
                if isinstance(exc, Exception)
                else StoreUnavailable("the transaction was interrupted; nothing was changed")
            )
            for pending in batch:
                if not pending.answer.done():
                    pending.answer.set_exception(failure)
            if not isinstance(exc, Exception):
                raise

    async def _commit_changes_unguarded(self, batch: Sequence[_Pending]) -> None:
        done: list[tuple[_Pending, _Planned | PolicyPubSubError | None]] = []
        messages: list[OutMessage] = []
        latest: dict[str, int] = {}  # subscriber id -> revision of its newest snapshot
        try:
            async with self._store.write() as tx:
                first = await self._begin(tx)
                overlay = _Overlay(self._policies)  # _begin may have rebuilt the index
                revision = first - 1
                at = now_ms()
                for pending in batch:
                    if pending.require is not None and overlay.get(pending.require) is None:
                        done.append((pending, NotFound("policy", pending.require)))
                        continue
                    changes = self._diff(
                        overlay, pending.wanted, pending.undeploy, pending.replace_all
                    )
                    if not changes:
                        done.append((pending, None))
                        continue
                    revision += 1
                    for policy_id, (_, new) in changes.items():
                        overlay.apply(policy_id, new, revision)
                    with self._metrics.matching_seconds.time():
                        planned = self._snapshots_for_change(changes, revision, at, overlay)
                    messages.extend(planned.messages)
                    for subscriber_id in planned.notified:
                        latest[subscriber_id] = revision
                    done.append((pending, planned))
                if revision < first:
                    raise _NoChange
                if revision > first:
                    await tx.advance_revision(revision)
                await tx.put_policies(
                    [
                        PolicyRow(
                            new.policy_id,
                            new.version,
                            new.type,
                            new.type_version,
                            orjson.dumps(new.body).decode(),
                            overlay.revisions[policy_id],
                            at,
                        )
                        for policy_id, new in overlay.changed.items()
                        if new is not None
                    ]
                )
                await tx.delete_policies(
                    policy_id for policy_id, new in overlay.changed.items() if new is None
                )
                heads = await self._emit(tx, messages, at)
                by_revision: dict[int, list[str]] = {}
                for subscriber_id, published in latest.items():
                    by_revision.setdefault(published, []).append(subscriber_id)
                for published, subscriber_ids in sorted(by_revision.items()):
                    await tx.mark_published(subscriber_ids, published, at)
                committing = time.perf_counter()
        except _NoChange:
            for pending, outcome in done:
                if isinstance(outcome, PolicyPubSubError):
                    pending.answer.set_exception(outcome)
                else:
                    pending.answer.set_result(ChangeResult(self._revision, [], [], 0))
            return
        self._metrics.commit_seconds.observe(time.perf_counter() - committing)
        self._metrics.changes_per_commit.observe(revision - first + 1)
        self._revision = revision
        for policy_id, new in overlay.changed.items():
            if new is None:
                self._policies.remove(policy_id)
            else:
                self._policies.put(policy_id, new.type, new)
        self._mark_published(latest, at)
        self._router_committed(heads, messages)
        unchanged_at = first - 1
        for pending, outcome in done:
            if isinstance(outcome, PolicyPubSubError):
                pending.answer.set_exception(outcome)
            elif outcome is None:
                pending.answer.set_result(ChangeResult(unchanged_at, [], [], 0))
            else:
                unchanged_at = outcome.revision
                result = outcome.result()
                log.info(
                    "revision %d: deployed %s, undeployed %s; %d snapshots published",
                    result.revision,
                    [d["policy-id"] for d in result.deployed],
                    [u["policy-id"] for u in result.undeployed],
                    result.notified,
                )
                pending.answer.set_result(result)

    def _diff(
        self,
        current: _Overlay,
        wanted: Sequence[Policy],
        undeploy: Sequence[tuple[str, str | None]],
        replace_all: bool,
    ) -> dict[str, tuple[Policy | None, Policy | None]]:
        """The net change: policy id -> (deployed now, deployed after), only where they differ.
        Undeployments apply before deployments, so "undeploy v1, deploy v2" is an upgrade.
        """
        after: dict[str, Policy | None] = {}
        if replace_all:
            after = {policy_id: None for policy_id in current.ids()}
        for policy_id, version in undeploy:
            deployed = current.get(policy_id)
            if deployed is not None and (version is None or deployed.version == version):
                after[policy_id] = None
        for policy in wanted:
            after[policy.policy_id] = policy
        changes: dict[str, tuple[Policy | None, Policy | None]] = {}
        for policy_id, new in after.items():
            old = current.get(policy_id)
            if old is None and new is None:
                continue
            if old is not None and new is not None and old.canonical == new.canonical:
                continue
            changes[policy_id] = (old, new)
        return changes

    def _snapshots_for_change(
        self,
        changes: Mapping[str, tuple[Policy | None, Policy | None]],
        revision: int,
        at: int,
        deployed: _Overlay,
    ) -> _Planned:
        """The snapshots of one change: ``deployed`` is the policy set with it applied."""
        affected: set[Selector] = set()
        for old, new in changes.values():
            for policy in (old, new):
                if policy is not None:
                    affected |= self._index.selectors_matching(policy.policy_id, policy.type)
        messages: list[OutMessage] = []
        notified: list[str] = []
        stamp = rfc3339(at) or ""
        for selector in affected:
            policies = {}
            for policy_id in sorted(deployed.select(selector)):
                policy = deployed.get(policy_id)
                if policy is not None:
                    policies[policy_id] = policy.body
            fragment = orjson.dumps(policies)
            for subscriber_id in sorted(self._index.members(selector)):
                subscription = self._subscriptions[subscriber_id]
                messages.append(
                    _snapshot(subscription, revision, constants.EVENT_UPDATE, stamp, fragment)
                )
                notified.append(subscriber_id)
        return _Planned(revision, changes, messages, notified)

    def _policies_for(self, selector: Selector) -> dict[str, Any]:
        found = {}
        for policy_id in sorted(self._policies.select(selector)):
            policy = self._policies.get(policy_id)
            if policy is not None:
                found[policy_id] = policy.body
        return found

    def _mark_published(self, revisions: Mapping[str, int], at: int) -> None:
        """Record in memory what the transaction recorded: subscriber id -> revision."""
        subscriptions = self._subscriptions
        for subscriber_id, revision in revisions.items():
            current = subscriptions.get(subscriber_id)
            if current is not None:
                subscriptions[subscriber_id] = current.published(revision, at)

    async def _emit(self, tx: WriteTx, messages: Sequence[OutMessage], at: int) -> dict[str, int]:
        """Write the messages in the change's transaction: onto the topics themselves when the
        router keeps them in the store, else into the outbox for the relay.
        """
        if self._router.in_store:
            return await tx.append(messages, at)
        await tx.outbox_add(messages, at)
        # The topic exists from now on, for readers, though the relay publishes a moment later.
        await tx.create_topics((m.topic for m in messages), at)
        return {}

    def _router_committed(
        self, heads: Mapping[str, int], messages: Sequence[OutMessage] = ()
    ) -> None:
        if self._relay is not None:
            self._relay.wake()
        else:
            self._router.committed(heads, messages)

    # -- subscriptions ----------------------------------------------------------------------

    async def subscribe(self, subscriber_id: str, request: SubscriptionRequest) -> SubscribeResult:
        """Insert or update a subscription and publish its starting snapshot."""
        record = SubscriptionRecord(
            subscriber_id,
            request.subscriber_topic,
            tuple(f.to_wire() for f in request.policy_filters),
            request.action,
            request.onap_name,
            request.onap_component,
            request.onap_instance,
        ).to_wire()
        async with self._write_lock:
            return await self._subscribe_locked(subscriber_id, record)

    async def _subscribe_locked(
        self, subscriber_id: str, record: dict[str, Any]
    ) -> SubscribeResult:
        async with self._store.write() as tx:
            revision = await self._begin(tx)
            existing = self._subscriptions.get(subscriber_id)
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
            with self._metrics.matching_seconds.time():
                policies = self._policies_for(subscription.selector)
                message = _snapshot(
                    subscription,
                    revision,
                    constants.EVENT_SUBSCRIBE,
                    rfc3339(at) or "",
                    orjson.dumps(policies),
                )
            heads = await self._emit(tx, [message], at)
            await tx.mark_published([subscriber_id], revision, at)
            committing = time.perf_counter()
        self._metrics.commit_seconds.observe(time.perf_counter() - committing)
        self._revision = revision
        self._subscriptions[subscriber_id] = subscription
        self._index.put(subscriber_id, subscription.selector)
        self._router_committed(heads, [message])
        log.info(
            "revision %d: %s subscription %s on topic %s (%d policies)",
            revision,
            "updated" if existing else "new",
            subscriber_id,
            subscription.topic,
            len(policies),
        )
        return SubscribeResult(existing is None, subscription, policies)

    async def unsubscribe(self, subscriber_id: str) -> int:
        """Delete a subscription; ``NotFound`` if unknown. Returns the new revision."""
        async with self._write_lock:
            return await self._unsubscribe_locked(subscriber_id)

    async def _unsubscribe_locked(self, subscriber_id: str) -> int:
        async with self._store.write() as tx:
            revision = await self._begin(tx)
            if subscriber_id not in self._subscriptions:
                raise NotFound("subscription", subscriber_id)
            await tx.delete_subscription(subscriber_id)
            committing = time.perf_counter()
        self._metrics.commit_seconds.observe(time.perf_counter() - committing)
        self._revision = revision
        del self._subscriptions[subscriber_id]
        self._index.remove(subscriber_id)
        log.info("revision %d: subscription %s removed", revision, subscriber_id)
        return revision

    async def subscription(self, subscriber_id: str) -> Subscription:
        await self.fresh()
        found = self._subscriptions.get(subscriber_id)
        if found is None:
            raise NotFound("subscription", subscriber_id)
        return found

    async def subscriptions(self, topic: str | None = None) -> list[Subscription]:
        await self.fresh()
        return sorted(
            (s for s in self._subscriptions.values() if topic is None or s.topic == topic),
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

    # -- decisions and reads ----------------------------------------------------------------

    async def decide(self, filters: Sequence[PolicyFilter]) -> dict[str, Any]:
        """Every deployed policy that any of the filters matches, by policy id."""
        await self.fresh()
        return self._policies_for(Selector.from_filters(f.to_wire() for f in filters))

    async def policies(self) -> list[Policy]:
        await self.fresh()
        return sorted((p for _, p in self._policies.items()), key=lambda p: p.policy_id)

    async def policy(self, policy_id: str) -> Policy:
        await self.fresh()
        found = self._policies.get(policy_id)
        if found is None:
            raise NotFound("policy", policy_id)
        return found


def _snapshot(
    subscription: Subscription, revision: int, event: str, stamp: str, policies: bytes
) -> OutMessage:
    body = b"".join(
        (
            subscription.envelope,
            b',"revision":',
            str(revision).encode(),
            b',"event":"',
            event.encode(),
            b'","timestamp":"',
            stamp.encode(),
            b'","policies":',
            policies,
            b"}",
        )
    )
    return OutMessage(
        dedup_id=f"{subscription.subscriber_id}@{revision}",
        topic=subscription.topic,
        body=body.decode(),
        key=subscription.subscriber_id,
        revision=revision,
    )


def pdp_status(
    update: PdpUpdate, result: ChangeResult, deployed: Sequence[Policy]
) -> dict[str, Any]:
    """The PDP_STATUS answer to a PDP_UPDATE."""
    if result.deployed or result.undeployed:
        message = (
            f"deployed {_count(len(result.deployed), 'policy', 'policies')} and undeployed "
            f"{_count(len(result.undeployed), 'policy', 'policies')} at revision "
            f"{result.revision}; {_count(result.notified, 'subscriber', 'subscribers')} notified"
        )
    else:
        message = f"no change; revision {result.revision}"
    status: dict[str, Any] = {
        "messageName": "PDP_STATUS",
        "requestId": str(uuid.uuid4()),
        "timestampMs": int(time.time() * 1000),
        "name": update.name or constants.SERVICE_NAME,
        "pdpType": constants.PDP_TYPE,
        "state": "ACTIVE",
        "healthy": "HEALTHY",
        "policies": [{"name": p.policy_id, "version": p.version} for p in deployed],
        "response": {
            "responseTo": update.request_id,
            "responseStatus": "SUCCESS",
            "responseMessage": message,
        },
        "revision": result.revision,
        "notified": result.notified,
    }
    extra = update.model_extra or {}
    for key in ("pdpGroup", "pdpSubgroup"):
        if isinstance(extra.get(key), str):
            status[key] = extra[key]
    return status


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"
