"""A subscriber's snapshot: the message that carries every policy its filters match.

A snapshot is the subscription's record, the revision it reflects, the event that caused it
(``subscribe`` or ``update``), when, and the matching policies by policy id. Subscribers with
the same filters share one selector: their policies are matched and serialised once, and only
the record around them differs. A snapshot larger than the router's largest message is never
written: :func:`oversized` finds them, and the change that causes them is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from policy_pubsub import constants
from policy_pubsub.exceptions import SnapshotTooLarge
from policy_pubsub.matching import Selector
from policy_pubsub.routers import OutMessage
from policy_pubsub.service.state import Policy, State, Subscription
from policy_pubsub.timestamps import rfc3339

__all__ = [
    "ChangeSnapshots",
    "Deployed",
    "change_snapshots",
    "matching_policies",
    "message_bytes",
    "oversized",
    "snapshot_message",
]

#: policy id -> (deployed before, deployed after); None where not deployed.
Changes = Mapping[str, tuple[Policy | None, Policy | None]]


class Deployed(Protocol):
    """A set of deployed policies that can be matched: the committed index, or a
    transaction's view of it.
    """

    def get(self, policy_id: str) -> Policy | None:
        """The policy deployed under that id, if any."""

    def select(self, selector: Selector) -> set[str]:
        """The ids of the deployed policies the selector matches."""


@dataclass(frozen=True, slots=True)
class ChangeSnapshots:
    """The snapshots one change causes, and the subscribers they go to (in the same order)."""

    messages: list[OutMessage]
    notified: list[str]


def matching_policies(deployed: Deployed, selector: Selector) -> dict[str, Any]:
    """The bodies of the deployed policies the selector matches, by policy id, sorted."""
    found = {}
    for policy_id in sorted(deployed.select(selector)):
        policy = deployed.get(policy_id)
        if policy is not None:
            found[policy_id] = policy.body
    return found


def message_bytes(message: OutMessage) -> int:
    """The size of a message's body in bytes of UTF-8, as a router carries it."""
    body = message.body
    return len(body) if body.isascii() else len(body.encode())


def oversized(messages: Sequence[OutMessage], limit: int) -> SnapshotTooLarge | None:
    """The refusal of the snapshots larger than ``limit`` bytes (naming every subscriber
    whose snapshot is), or None when all of them fit.
    """
    over: dict[str, int] = {}
    for message in messages:
        size = message_bytes(message)
        if size > limit:
            over[message.key or message.topic] = size
    if not over:
        return None
    return SnapshotTooLarge(sorted(over), max(over.values()), limit)


def change_snapshots(
    state: State, changes: Changes, revision: int, at: int, deployed: Deployed
) -> ChangeSnapshots:
    """An ``update`` snapshot for every subscriber whose filters match a policy the change
    deploys, replaces or undeploys; ``deployed`` is the policy set with the change applied.
    """
    affected: set[Selector] = set()
    for old, new in changes.values():
        for policy in (old, new):
            if policy is not None:
                affected |= state.index.selectors_matching(policy.policy_id, policy.type)
    messages: list[OutMessage] = []
    notified: list[str] = []
    stamp = rfc3339(at) or ""
    for selector in affected:
        fragment = orjson.dumps(matching_policies(deployed, selector))
        for subscriber_id in sorted(state.index.members(selector)):
            subscription = state.subscriptions[subscriber_id]
            messages.append(
                snapshot_message(subscription, revision, constants.EVENT_UPDATE, stamp, fragment)
            )
            notified.append(subscriber_id)
    return ChangeSnapshots(messages, notified)


def snapshot_message(
    subscription: Subscription, revision: int, event: str, stamp: str, policies: bytes
) -> OutMessage:
    """The snapshot message: the subscription's record with ``revision``, ``event``,
    ``timestamp`` and ``policies`` (already serialised) added, keyed by the subscriber id and
    with a de-duplication id unique to the subscriber and revision.
    """
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
