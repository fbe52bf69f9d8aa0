"""What the service holds in memory: the deployed policies and the subscriptions, indexed for
matching, as of one store revision, and how that is kept in step with the store.

The indexes mirror the committed tables. A change updates them only after its commit, and
while it holds :attr:`State.writing`; whenever the store's revision is not the one they
reflect (another replica committed a change), they take in what changed since from the
store's change log: the policies and subscriptions written or deleted after their revision,
and the published marks that moved. A writer does so inside its transaction
(:meth:`State.take_revision`); otherwise a task does as soon as a notification says the store
moved on, so that a read (:meth:`State.catch_up`) usually finds the indexes current, or waits
for that task. Only a replica that was away longer than the log keeps reads everything again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from policy_pubsub.matching import PolicyIndex, Selector, SubscriptionIndex
from policy_pubsub.models import ToscaPolicy
from policy_pubsub.slices import Slices
from policy_pubsub.store import Changes, PolicyRow, Snapshot, Store, SubscriptionRow, WriteTx
from policy_pubsub.store.notify import REVISION_CHANNEL
from policy_pubsub.store.state import changes_since, load_all
from policy_pubsub.tasks import cancelled

__all__ = ["Policy", "State", "Subscription"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Policy:
    """A deployed policy: its identity (the TOSCA name and version, see ``policy_identity``),
    and its body as deployed, with ``metadata.policy-id`` / ``policy-version`` filled in where
    the PAP left them out.
    """

    policy_id: str
    version: str
    type: str
    type_version: str | None
    body: dict[str, Any]
    canonical: bytes  # sorted-key JSON of the body: equal bytes, identical policy

    @classmethod
    def from_model(cls, model: ToscaPolicy) -> Policy:
        return cls._make(
            model.policy_id or "",
            model.policy_version or "",
            model.type,
            model.type_version,
            model.body(),
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

    def published(self, revision: int, at: int | None) -> Subscription:
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


class State:
    """The deployed policies and the subscriptions as of :attr:`revision`, indexed.

    Readers call :meth:`catch_up` first; writers hold :attr:`writing`, take their revision
    with :meth:`take_revision` inside their transaction, and record what they committed with
    :meth:`policies_changed`, :meth:`subscription_put`, :meth:`subscription_removed` and
    :meth:`published` once it committed.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self.revision = -1
        self.policies: PolicyIndex[Policy] = PolicyIndex()
        self.subscriptions: dict[str, Subscription] = {}
        self.index = SubscriptionIndex()
        #: Held from a change's first statement until the indexes reflect its commit, and
        #: while catching up: the indexes never go back, and take in no change twice.
        self.writing = asyncio.Lock()
        self._notified = -1  # the newest revision a notification announced
        self._unsure = False  # notifications may have been missed (the listener (re)connected)
        self._following: asyncio.Task[None] | None = None  # catching up in the background
        self._step = asyncio.Event()  # set when a step of that catch-up ends (then replaced)
        self._failing = False  # the last background catch-up failed (logged once)
        #: Catch-ups that read the store, by what started them (tests and benchmarks).
        self.reads = {"background": 0, "read": 0}

    async def load(self) -> None:
        """Read everything from the store, and from now on follow the notifications of
        changes committed elsewhere (on a shared store).
        """
        notifications = self._store.notifications
        if notifications is not None:
            notifications.on(REVISION_CHANNEL, self._revision_committed)
            notifications.on_reconnect(self._fell_behind)
        async with self.writing:  # a catch-up the listener starts meanwhile waits for it
            self._replace(await self._store.state.load())
        log.info(
            "store at revision %d: %d policies, %d subscriptions",
            self.revision,
            len(self.policies),
            len(self.subscriptions),
        )

    async def close(self) -> None:
        """Stop following the store (the catch-up under way, if any, is cancelled)."""
        task, self._following = self._following, None
        if task is not None:
            await cancelled(task)

    @property
    def behind(self) -> bool:
        """A notification announced a revision the indexes do not reflect yet, or some may
        have been missed.
        """
        return self._unsure or self._notified > self.revision

    async def catch_up(self) -> None:
        """Make the indexes reflect the store before a read. With one process (SQLite) they
        always do. Replicas sharing a store catch up in the background as soon as a
        notification says it moved on: a read that comes while that runs waits for it, and
        reads the store itself only if it failed; while notifications are not arriving, every
        read checks the store's revision.
        """
        notifications = self._store.notifications
        if notifications is None or (notifications.connected and not self.behind):
            return
        # Wait for the running catch-up only until it has reached what was announced when
        # this read came, not while it goes on following newer commits.
        wanted = self._notified
        while notifications.connected and self._following and not self._following.done():
            await self._step.wait()
            if not self._unsure and self.revision >= wanted:
                return
        if not self.behind:
            return
        async with self.writing:
            await self._read_changes("read")

    async def take_revision(self, tx: WriteTx, count: int = 1) -> int:
        """Take the next ``count`` revisions in ``tx`` and return the first; first catch up,
        in the same transaction, if another writer moved the store on. Call it holding
        :attr:`writing`.
        """
        revision = await tx.next_revision(count)
        if revision - 1 != self.revision:
            # The revision row is locked: no other change commits while these are read.
            changes = await changes_since(tx.conn, self.revision, revision - 1)
            found = changes if changes is not None else await load_all(tx.conn)
            self._follow(replace(found, revision=revision - 1))
        # The indexes now reflect every revision committed before this one.
        self._unsure = False
        return revision

    # -- what a commit changed ----------------------------------------------------------------

    def policies_changed(self, changed: Mapping[str, Policy | None], revision: int) -> None:
        """Record committed policy changes (policy id -> deployed after, None if undeployed)."""
        for policy_id, new in changed.items():
            if new is None:
                self.policies.remove(policy_id)
            else:
                self.policies.put(policy_id, new.type, new)
        self.revision = revision

    def subscription_put(self, subscription: Subscription) -> None:
        """Record a committed insert or update of a subscription."""
        self.subscriptions[subscription.subscriber_id] = subscription
        self.index.put(subscription.subscriber_id, subscription.selector)
        self.revision = subscription.revision

    def subscription_removed(self, subscriber_id: str, revision: int) -> None:
        """Record a committed delete of a subscription."""
        del self.subscriptions[subscriber_id]
        self.index.remove(subscriber_id)
        self.revision = revision

    def published(self, revisions: Mapping[str, int], at: int) -> None:
        """Record what a transaction marked as published: subscriber id -> revision."""
        subscriptions = self.subscriptions
        for subscriber_id, revision in revisions.items():
            current = subscriptions.get(subscriber_id)
            if current is not None:
                subscriptions[subscriber_id] = current.published(revision, at)

    async def published_in_slices(
        self, revisions: Mapping[str, int], at: int, slices: Slices
    ) -> None:
        """As :meth:`published`, in ``slices`` (a push marks up to every subscription). Call
        it holding :attr:`writing`. Cancelled between slices, it records the rest at once
        before it lets the cancellation through: the marks committed all together.
        """
        subscriptions = self.subscriptions
        items = iter(revisions.items())
        for subscriber_id, revision in items:
            current = subscriptions.get(subscriber_id)
            if current is not None:
                subscriptions[subscriber_id] = current.published(revision, at)
            if slices.due():
                try:
                    await slices.pause()
                except asyncio.CancelledError:
                    self.published(dict(items), at)
                    raise

    def resent(self, subscriber_ids: Iterable[str], revision: int, at: int) -> None:
        """Record a committed revision that only published fresh snapshots to subscribers."""
        self.published(dict.fromkeys(subscriber_ids, revision), at)
        self.revision = revision

    def deployed(self) -> Iterable[Policy]:
        """The deployed policies, in no particular order."""
        return (policy for _, policy in self.policies.items())

    # -- following the store ------------------------------------------------------------------

    def _follow(self, found: Changes | Snapshot) -> None:
        """Take in what changed since :attr:`revision`, or everything."""
        if isinstance(found, Snapshot):
            log.info(
                "store moved from revision %d to %d, %s: reloading %d policies and %d "
                "subscriptions",
                self.revision,
                found.revision,
                "further back than its change log keeps"
                if self._store.shared
                else "written by another process (a SQLite store keeps no change log)",
                len(found.policies),
                len(found.subscriptions),
            )
            self._replace(found)
        else:
            self._apply(found)

    def _apply(self, changes: Changes) -> None:
        for row in changes.policies:
            policy = Policy.from_row(row)
            self.policies.put(policy.policy_id, policy.type, policy)
        for policy_id in changes.deleted_policies:
            self.policies.remove(policy_id)
        subscriptions, index = self.subscriptions, self.index
        for subscriber_id in changes.deleted_subscriptions:
            subscriptions.pop(subscriber_id, None)
            index.remove(subscriber_id)
        written: set[str] = set()
        for subscription_row in changes.subscriptions:
            subscription = Subscription.from_row(subscription_row)
            subscriptions[subscription.subscriber_id] = subscription
            index.put(subscription.subscriber_id, subscription.selector)
            written.add(subscription.subscriber_id)
        for subscriber_id, (last, at) in changes.marks.items():
            current = subscriptions.get(subscriber_id)
            if current is not None and subscriber_id not in written:
                subscriptions[subscriber_id] = current.published(last, at)
        self.revision = changes.revision

    def _replace(self, snapshot: Snapshot) -> None:
        policies: PolicyIndex[Policy] = PolicyIndex()
        for row in snapshot.policies:
            policy = Policy.from_row(row)
            policies.put(policy.policy_id, policy.type, policy)
        subscriptions = {r.subscriber_id: Subscription.from_row(r) for r in snapshot.subscriptions}
        index = SubscriptionIndex()
        for subscription in subscriptions.values():
            index.put(subscription.subscriber_id, subscription.selector)
        self.policies, self.subscriptions, self.index = policies, subscriptions, index
        self.revision = snapshot.revision

    async def _read_changes(self, why: str) -> None:
        """Take in what changed since :attr:`revision`. Call it holding :attr:`writing`."""
        unsure, self._unsure = self._unsure, False
        try:
            found = await self._store.state.since(self.revision)
        except BaseException:
            self._unsure = True if unsure else self._unsure
            raise
        self.reads[why] += 1
        if found is not None:
            self._follow(found)

    def _revision_committed(self, payload: str) -> None:
        """A writer (another replica, or this one) committed revisions: catch up at once."""
        notified = max((int(item) for item in payload.split(",") if item.isdigit()), default=-1)
        if notified > self._notified:
            self._notified = notified
        if self.behind:
            self._follow_soon()

    def _fell_behind(self) -> None:
        self._unsure = True
        self._follow_soon()

    def _follow_soon(self) -> None:
        """Start the background catch-up unless it runs: it goes on while behind."""
        if self._following is None or self._following.done():
            self._following = asyncio.create_task(
                self._follow_store(), name="policy-pubsub catch-up"
            )

    async def _follow_store(self) -> None:
        try:
            await self._follow_steps()
        finally:
            self._stepped()

    def _stepped(self) -> None:
        """Wake the reads waiting for a step of the background catch-up to end."""
        step, self._step = self._step, asyncio.Event()
        step.set()

    async def _follow_steps(self) -> None:
        while self.behind:
            async with self.writing:
                if not self.behind:  # a writer caught up meanwhile, in its transaction
                    return
                notified = self._notified
                try:
                    await self._read_changes("background")
                except Exception as exc:
                    # Reads now check the store themselves; the next notification retries.
                    self._unsure = True
                    if not self._failing:
                        self._failing = True
                        log.warning("catching up with the store failed: %s", exc)
                    return
                if self._failing:
                    self._failing = False
                    log.info("caught up with the store again, at revision %d", self.revision)
                if self.revision < notified:
                    # Cannot happen: a notification comes after its commit. Never loop on it.
                    log.warning(
                        "notified of revision %d, but the store is at %d", notified, self.revision
                    )
                    self._notified = self.revision
            self._stepped()
