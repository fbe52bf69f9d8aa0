"""Group commit: the policy changes that queue up behind a transaction commit in the next one.

A change (deploy, undeploy, a PDP_UPDATE) is queued; the first queued change to get the write
lock commits every queued change in one transaction, so one commit (one fsync on SQLite)
acknowledges them all. A transaction goes through these steps, in order:

1. :meth:`GroupCommit.plan`, once the transaction took the next revision (and caught up
   with the store if another writer had moved it on): for each change in arrival order, its
   net change against the policies as the changes before it left them (:class:`Overlay`),
   its own revision, and the snapshots it causes.
2. :meth:`GroupCommit.write`: the policies, the snapshots (through the outlet) and the
   published marks, in the transaction; then the commit. A batch that changes nothing is
   rolled back instead, and writes nothing.
   A change whose snapshot for some subscriber would be larger than the router's largest
   message is refused there (``SnapshotTooLarge``), before anything is written: it takes no
   revision and the changes after it plan as if it had not been asked for.
3. :meth:`GroupCommit.apply`: the in-memory state takes in what committed, and the outlet
   hands the snapshots on (wakes readers or the relay).
4. Each change is answered with its own result, as if it had been alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import orjson

from policy_pubsub.exceptions import NotFound, PolicyPubSubError
from policy_pubsub.matching import PolicyIndex, Selector
from policy_pubsub.metrics import Metrics
from policy_pubsub.routers import OutMessage, Router
from policy_pubsub.service.batches import Batches
from policy_pubsub.service.outlets import Outlet, Written
from policy_pubsub.service.snapshots import ChangeSnapshots, change_snapshots, oversized
from policy_pubsub.service.state import Policy, State
from policy_pubsub.slices import Slices
from policy_pubsub.store import PolicyRow, Store, WriteTx, now_ms

__all__ = [
    "MAX_CHANGES_PER_COMMIT",
    "ChangeResult",
    "GroupCommit",
    "Overlay",
    "Plan",
    "PolicyChange",
    "absent",
    "diff",
]

log = logging.getLogger(__name__)

# Policy changes committed together at most, when they queue up behind a transaction.
MAX_CHANGES_PER_COMMIT = 256

#: policy id -> (deployed before, deployed after), only where they differ.
Changes = Mapping[str, tuple[Policy | None, Policy | None]]


@dataclass(frozen=True, slots=True)
class ChangeResult:
    """A committed policy change: its revision (the store's, if it changed nothing), the
    policies it deployed and undeployed, and how many subscribers got a snapshot.

    ``not_deployed`` lists the undeployments asked for that found nothing to undeploy, as
    ``{"name", "version", "deployed"}``: the name and version asked for, and the version that
    is deployed under that name (None if none is). ONAP's PDPs leave such a policy as it is
    and answer SUCCESS, listing what they have deployed; the PDP_STATUS says so in words too.
    """

    revision: int
    deployed: list[dict[str, str]]
    undeployed: list[dict[str, str]]
    notified: int
    not_deployed: tuple[dict[str, str | None], ...] = ()


@dataclass(frozen=True, slots=True)
class PolicyChange:
    """A requested change of the deployed policies.

    Undeployments (policy id, and the version to match or None for any) apply before
    deployments, so "undeploy v1, deploy v2" is an upgrade; ``replace_all`` undeploys every
    policy not in ``wanted``; with ``require``, the change fails with ``NotFound`` unless that
    policy is deployed.
    """

    wanted: Sequence[Policy] = ()
    undeploy: Sequence[tuple[str, str | None]] = ()
    replace_all: bool = False
    require: str | None = None


class Overlay:
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

    def saved(self, policy_ids: Iterable[str]) -> dict[str, tuple[Policy | None, int] | None]:
        """What the overlay holds for these ids now (None: nothing), for :meth:`restore`."""
        return {
            policy_id: (self.changed[policy_id], self.revisions[policy_id])
            if policy_id in self.changed
            else None
            for policy_id in policy_ids
        }

    def restore(self, saved: Mapping[str, tuple[Policy | None, int] | None]) -> None:
        """Undo what was applied to these ids since :meth:`saved` returned ``saved``."""
        for policy_id, before in saved.items():
            if before is None:
                self.changed.pop(policy_id, None)
                self.revisions.pop(policy_id, None)
                self._added.remove(policy_id)
            else:
                self.apply(policy_id, *before)

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


def absent(current: Overlay, change: PolicyChange) -> tuple[dict[str, str | None], ...]:
    """The undeployments of the change that name a policy (or a version of it) that is not
    deployed, each with the version deployed under that name, if any.
    """
    found: list[dict[str, str | None]] = []
    for policy_id, version in change.undeploy:
        deployed = current.get(policy_id)
        if deployed is None or (version is not None and deployed.version != version):
            found.append(
                {
                    "name": policy_id,
                    "version": version,
                    "deployed": None if deployed is None else deployed.version,
                }
            )
    return tuple(found)


def diff(current: Overlay, change: PolicyChange) -> dict[str, tuple[Policy | None, Policy | None]]:
    """The net change: policy id -> (deployed now, deployed after), only where they differ;
    an identical policy deployed again is no change.
    """
    after: dict[str, Policy | None] = {}
    if change.replace_all:
        after = {policy_id: None for policy_id in current.ids()}
    for policy_id, version in change.undeploy:
        deployed = current.get(policy_id)
        if deployed is not None and (version is None or deployed.version == version):
            after[policy_id] = None
    for policy in change.wanted:
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


@dataclass(frozen=True, slots=True)
class _Planned:
    """One change of a transaction: its revision, net change and snapshots."""

    revision: int
    changes: Changes
    snapshots: ChangeSnapshots
    absent: tuple[dict[str, str | None], ...] = ()

    def result(self) -> ChangeResult:
        changes = self.changes.values()
        deployed = [new.ident() for _, new in changes if new is not None]
        undeployed = [old.ident() for old, new in changes if new is None and old is not None]
        notified = len(self.snapshots.notified)
        return ChangeResult(self.revision, deployed, undeployed, notified, self.absent)


@dataclass(frozen=True, slots=True)
class _Unchanged:
    """A change of a transaction that changes nothing, and what it named that is not deployed."""

    absent: tuple[dict[str, str | None], ...] = ()


#: What became of one change of a batch: planned, refused, or no change.
_Outcome = _Planned | PolicyPubSubError | _Unchanged


@dataclass(slots=True)
class Plan:
    """What one transaction commits: the revisions from ``first`` to ``last``, the policies
    as they leave them, every snapshot in order, and each subscriber's newest snapshot.
    """

    first: int
    at: int
    overlay: Overlay
    last: int = 0
    outcomes: list[_Outcome] = field(default_factory=list)  # one per change, in order
    messages: list[OutMessage] = field(default_factory=list)
    latest: dict[str, int] = field(default_factory=dict)  # subscriber id -> revision

    def __post_init__(self) -> None:
        self.last = self.first - 1

    @property
    def changes_anything(self) -> bool:
        return self.last >= self.first

    def add(self, planned: _Planned) -> None:
        self.outcomes.append(planned)
        self.messages.extend(planned.snapshots.messages)
        for subscriber_id in planned.snapshots.notified:
            self.latest[subscriber_id] = planned.revision
        self.last = planned.revision

    def results(self) -> list[ChangeResult | PolicyPubSubError]:
        """Each change's answer; one that changed nothing gets the revision it found."""
        results: list[ChangeResult | PolicyPubSubError] = []
        unchanged_at = self.first - 1
        for outcome in self.outcomes:
            if isinstance(outcome, _Unchanged):
                results.append(ChangeResult(unchanged_at, [], [], 0, outcome.absent))
            elif isinstance(outcome, PolicyPubSubError):
                results.append(outcome)
            else:
                unchanged_at = outcome.revision
                results.append(outcome.result())
        return results


class GroupCommit:
    """Commits policy changes, those that queue up together in one transaction."""

    def __init__(
        self,
        state: State,
        store: Store,
        router: Router,
        outlet: Outlet,
        metrics: Metrics,
        *,
        commit_delay: float = 0.0,
    ) -> None:
        self._state = state
        self._store = store
        self._router = router  # its largest message bounds every snapshot
        self._outlet = outlet
        self._metrics = metrics
        self._batches: Batches[PolicyChange, ChangeResult] = Batches(
            state.writing, self.commit, MAX_CHANGES_PER_COMMIT, delay=commit_delay
        )

    @property
    def queued(self) -> int:
        """How many changes wait for a transaction."""
        return self._batches.queued

    async def submit(self, change: PolicyChange) -> ChangeResult:
        """Queue the change, and return once it committed with whatever else was queued.

        Changes that arrive while a transaction is committing wait for the write lock; the
        first of them to get it commits every queued change (at most
        ``MAX_CHANGES_PER_COMMIT``), each with its own revision in arrival order.
        """
        return await self._batches.submit(change)

    async def commit(self, batch: Sequence[PolicyChange]) -> list[ChangeResult | PolicyPubSubError]:
        """Commit the changes in one transaction, and return each one's result or refusal,
        in order. Call it holding the state's write lock.
        """
        # A push to 10,000 subscribers is tens of milliseconds of Python on either side of
        # the commit: cut into slices, with the event loop running between them.
        slices = Slices()
        async with self._store.write() as tx:
            plan = await self.plan(batch, await self._state.take_revision(tx), now_ms(), slices)
            if not plan.changes_anything:
                await tx.rollback()  # the revision taken goes back: nothing is written
                return plan.results()
            written = await self.write(tx, plan)
            committing = time.perf_counter()
        self._metrics.commit_seconds.observe(time.perf_counter() - committing)
        self._metrics.changes_per_commit.observe(plan.last - plan.first + 1)
        await self.apply(plan, written, slices)
        results = plan.results()
        for result in results:
            if isinstance(result, ChangeResult) and (result.deployed or result.undeployed):
                log.info(
                    "revision %d: deployed %s, undeployed %s; %d snapshots published",
                    result.revision,
                    [d["policy-id"] for d in result.deployed],
                    [u["policy-id"] for u in result.undeployed],
                    result.notified,
                )
        return results

    async def plan(
        self, batch: Sequence[PolicyChange], first: int, at: int, slices: Slices | None = None
    ) -> Plan:
        """Each change's net change, revision (from ``first`` on) and snapshots; or its
        refusal: ``NotFound`` for a required policy not deployed, ``SnapshotTooLarge`` for a
        snapshot the router cannot carry. The snapshots are built in ``slices``.
        """
        plan = Plan(first, at, Overlay(self._state.policies))
        overlay = plan.overlay
        limit = self._router.max_message_bytes
        for change in batch:
            if change.require is not None and overlay.get(change.require) is None:
                plan.outcomes.append(NotFound("policy", change.require))
                continue
            missing = absent(overlay, change)
            changes = diff(overlay, change)
            if not changes:
                plan.outcomes.append(_Unchanged(missing))
                continue
            revision = plan.last + 1
            before = overlay.saved(changes)
            for policy_id, (_, new) in changes.items():
                overlay.apply(policy_id, new, revision)
            with self._metrics.matching_seconds.time():
                snapshots = await change_snapshots(
                    self._state, changes, revision, at, overlay, slices
                )
            refused = oversized(snapshots.messages, limit)
            if refused is not None:
                overlay.restore(before)
                log.warning("refused a policy change: %s", refused.message)
                plan.outcomes.append(refused)
                continue
            plan.add(_Planned(revision, changes, snapshots, missing))
        return plan

    async def write(self, tx: WriteTx, plan: Plan) -> Written:
        """Write what the plan changes in ``tx``: the revision, the policies, the snapshots
        and the published marks.
        """
        if plan.last > plan.first:
            await tx.advance_revision(plan.last)
        changed = plan.overlay.changed
        await tx.put_policies(
            [
                PolicyRow(
                    new.policy_id,
                    new.version,
                    new.type,
                    new.type_version,
                    orjson.dumps(new.body).decode(),
                    plan.overlay.revisions[policy_id],
                    plan.at,
                )
                for policy_id, new in changed.items()
                if new is not None
            ]
        )
        await tx.delete_policies(
            {
                policy_id: plan.overlay.revisions[policy_id]
                for policy_id, new in changed.items()
                if new is None
            },
            plan.at,
        )
        written = await self._outlet.write(tx, plan.messages, plan.at)
        by_revision: dict[int, list[str]] = {}
        for subscriber_id, published in plan.latest.items():
            by_revision.setdefault(published, []).append(subscriber_id)
        for published, subscriber_ids in sorted(by_revision.items()):
            await tx.mark_published(subscriber_ids, published, plan.at)
        return written

    async def apply(self, plan: Plan, written: Written, slices: Slices | None = None) -> None:
        """Once the plan committed: the state takes it in (the published marks in
        ``slices``), the outlet hands on the snapshots. All of it, even if cancelled on the
        way: the transaction committed.
        """
        self._state.policies_changed(plan.overlay.changed, plan.last)
        try:
            await self._state.published_in_slices(plan.latest, plan.at, slices or Slices())
        finally:
            self._outlet.after_commit(written)
