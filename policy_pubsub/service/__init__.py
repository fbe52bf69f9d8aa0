"""The use cases: subscribe, unsubscribe, deploy, undeploy, decide, and the snapshots they cause.

Every change runs in one store transaction that takes the next store revision, writes the
change and writes a full snapshot for each affected subscriber through the outlet. The core,
read top to bottom:

- :mod:`~policy_pubsub.service.state`: the policies and subscriptions in memory, indexed,
  and catching up with the store when another replica changed it;
- :mod:`~policy_pubsub.service.commit`: group commit of policy changes (queue, plan, one
  transaction, apply, answer);
- :mod:`~policy_pubsub.service.subscriptions`: subscribe, unsubscribe, and their reads;
- :mod:`~policy_pubsub.service.snapshots`: a subscriber's snapshot message;
- :mod:`~policy_pubsub.service.outlets`: where snapshots go (the store's topics, or the
  outbox), chosen once when the server is wired.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from policy_pubsub.exceptions import InvalidRequest, NotFound
from policy_pubsub.matching import Selector
from policy_pubsub.metrics import Metrics
from policy_pubsub.models import PdpUpdate, PolicyFilter, SubscriptionRequest, ToscaPolicy
from policy_pubsub.routers import Router
from policy_pubsub.service.commit import ChangeResult, GroupCommit, PolicyChange
from policy_pubsub.service.outlets import (
    InStoreOutlet,
    OutboxOutlet,
    Outlet,
    Written,
    outlet_for,
)
from policy_pubsub.service.snapshots import matching_policies
from policy_pubsub.service.state import Policy, State, Subscription
from policy_pubsub.service.subscriptions import (
    Resent,
    SubscribeResult,
    Subscriptions,
    TopicCheck,
)
from policy_pubsub.store import Store

__all__ = [
    "ChangeResult",
    "GroupCommit",
    "InStoreOutlet",
    "OutboxOutlet",
    "Outlet",
    "Policy",
    "PolicyChange",
    "PolicyService",
    "Resent",
    "State",
    "SubscribeResult",
    "Subscription",
    "Subscriptions",
    "TopicCheck",
    "Written",
    "outlet_for",
]


class PolicyService:
    """The server's use cases over a store, a router (for delivery statistics and the
    largest message it carries) and the outlet its snapshots go through.
    """

    def __init__(
        self,
        store: Store,
        router: Router,
        outlet: Outlet,
        *,
        metrics: Metrics | None = None,
        commit_delay: float = 0.0,
    ) -> None:
        metrics = metrics or Metrics()  # times matching and commits
        self._state = State(store)
        self._commits = GroupCommit(
            self._state, store, router, outlet, metrics, commit_delay=commit_delay
        )
        self._subscriptions = Subscriptions(self._state, store, router, outlet, metrics)

    @property
    def revision(self) -> int:
        """The store revision the service's state reflects."""
        return self._state.revision

    async def start(self) -> None:
        """Load the policies and subscriptions from the store."""
        await self._state.load()

    async def close(self) -> None:
        """Stop following the store's changes made elsewhere."""
        await self._state.close()

    async def catch_up(self) -> None:
        """Make the state reflect the store (see :meth:`State.catch_up`)."""
        await self._state.catch_up()

    # -- policies ---------------------------------------------------------------------------

    async def deploy(self, policies: Sequence[ToscaPolicy]) -> ChangeResult:
        """Deploy (insert or replace) policies; identical ones change nothing."""
        return await self._commits.submit(PolicyChange(wanted=_policies(policies)))

    async def undeploy(self, policy_id: str) -> ChangeResult:
        """Undeploy one policy; ``NotFound`` if it is not deployed."""
        return await self._commits.submit(
            PolicyChange(undeploy=[(policy_id, None)], require=policy_id)
        )

    async def pdp_update(self, update: PdpUpdate) -> ChangeResult:
        """Apply a PDP_UPDATE of any PAP release (see ``models.PdpUpdate``).

        ``policies``, when given, is the complete desired set: what is deployed and not in it
        is undeployed. A Honolulu PAP sends the delta beside it; that delta must agree with
        the set (every policy to deploy is in it, no policy to undeploy is), or the update is
        refused with ``InvalidRequest`` and changes nothing: a message that contradicts itself
        cannot be applied both ways. Without ``policies``, the delta is applied: undeployments
        first, so "undeploy v1, deploy v2" is an upgrade. An undeployment that names a policy
        (or a version of it) that is not deployed changes nothing and is reported in
        ``ChangeResult.not_deployed``.
        """
        if update.policies is not None:
            _check_agreement(update)
            change = PolicyChange(wanted=_policies(update.policies), replace_all=True)
        else:
            change = PolicyChange(
                wanted=_policies(update.policies_to_be_deployed or ()),
                undeploy=[
                    (ident.name, None if ident.version is None else str(ident.version))
                    for ident in update.policies_to_be_undeployed or ()
                ],
            )
        return await self._commits.submit(change)

    async def decide(self, filters: Sequence[PolicyFilter]) -> dict[str, Any]:
        """Every deployed policy that any of the filters matches, by policy id."""
        await self._state.catch_up()
        selector = Selector.from_filters(f.to_wire() for f in filters)
        return matching_policies(self._state.policies, selector)

    async def policies(self) -> list[Policy]:
        """Every deployed policy, by policy id."""
        await self._state.catch_up()
        return sorted(self._state.deployed(), key=lambda p: p.policy_id)

    async def policy(self, policy_id: str) -> Policy:
        """A deployed policy; ``NotFound`` if it is not deployed."""
        await self._state.catch_up()
        found = self._state.policies.get(policy_id)
        if found is None:
            raise NotFound("policy", policy_id)
        return found

    # -- subscriptions ----------------------------------------------------------------------

    async def subscribe(
        self, subscriber_id: str, request: SubscriptionRequest, may_use: TopicCheck | None = None
    ) -> SubscribeResult:
        """Insert or update a subscription and publish its starting snapshot; with
        ``may_use``, ``SubscriptionTaken`` rather than replace one on a topic it refuses.
        """
        return await self._subscriptions.subscribe(subscriber_id, request, may_use)

    async def unsubscribe(self, subscriber_id: str, may_use: TopicCheck | None = None) -> int:
        """Delete a subscription; ``NotFound`` if unknown or (with ``may_use``) on a topic it
        refuses. Returns the new revision.
        """
        return await self._subscriptions.unsubscribe(subscriber_id, may_use)

    async def resend(self, subscriber_ids: Sequence[str]) -> Resent:
        """Publish a fresh snapshot, at a new revision, to each of these subscribers, and
        remove their dead letters (see :meth:`Subscriptions.resend`).
        """
        return await self._subscriptions.resend(subscriber_ids)

    async def subscription(self, subscriber_id: str) -> Subscription:
        """A subscription; ``NotFound`` if unknown."""
        return await self._subscriptions.get(subscriber_id)

    async def subscription_with_policies(
        self, subscriber_id: str
    ) -> tuple[Subscription, dict[str, Any]]:
        """A subscription and its current policies, which its ``last_revision`` labels
        exactly; ``NotFound`` if unknown.
        """
        return await self._subscriptions.with_policies(subscriber_id)

    async def subscriptions(self, topic: str | None = None) -> list[Subscription]:
        """Every subscription, or those on ``topic``, by subscriber id."""
        return await self._subscriptions.listing(topic)

    async def last_consumed(self, topic: str) -> int | None:
        """When a consumer group last consumed from the topic."""
        return await self._subscriptions.last_consumed(topic)

    async def stale(
        self, subscriptions: Sequence[Subscription], seconds: float
    ) -> list[Subscription]:
        """Those whose topic has held a message no consumer group read for ``seconds``."""
        return await self._subscriptions.stale(subscriptions, seconds)

    # -- seams for tests and benchmarks -----------------------------------------------------

    @asynccontextmanager
    async def writes_held(self) -> AsyncIterator[None]:
        """Hold every write (and catch-up) until the block ends: changes that arrive
        meanwhile queue up, and commit together once it ends.
        """
        async with self._state.writing:
            yield

    @property
    def queued_changes(self) -> int:
        """How many policy changes wait for the next transaction."""
        return self._commits.queued

    @property
    def queued_subscription_changes(self) -> int:
        """How many subscribes and unsubscribes wait for the next transaction."""
        return self._subscriptions.queued


def _policies(models: Sequence[ToscaPolicy]) -> list[Policy]:
    return [Policy.from_model(model) for model in models]


def _check_agreement(update: PdpUpdate) -> None:
    """``InvalidRequest`` unless the delta of an update that carries the complete set too
    agrees with that set.
    """
    complete = {(p.policy_id, p.policy_version) for p in update.policies or ()}
    names = {name for name, _ in complete}
    problems = [
        f"{p.policy_id} {p.policy_version} is in policiesToBeDeployed but not in policies"
        for p in update.policies_to_be_deployed or ()
        if (p.policy_id, p.policy_version) not in complete
    ]
    for ident in update.policies_to_be_undeployed or ():
        version = None if ident.version is None else str(ident.version)
        if (ident.name, version) in complete or (version is None and ident.name in names):
            problems.append(f"{ident.name} is in policiesToBeUndeployed and in policies")
    if problems:
        raise InvalidRequest(
            "The PDP_UPDATE contradicts itself: 'policies' is the complete set, and "
            + "; ".join(problems[:5])
            + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
            + ". Nothing was changed.",
        )
