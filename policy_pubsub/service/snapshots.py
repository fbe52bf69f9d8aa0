"""A subscriber's snapshot: the message that carries every policy its filters match.

A snapshot is the subscription's record, the revision it reflects, the event that caused it
(``subscribe`` or ``update``), when, and the matching policies by policy id. Subscribers with
the same filters share one selector: their policies are matched and serialised once, and only
the record around them differs; when several subscribers share it, their snapshots say so
(``OutMessage.shared``), and the store keeps that common end of their bodies once. A
snapshot larger than the router's largest message is never written: :func:`oversized` finds
them, and the change that causes them is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from policy_pubsub import constants
from policy_pubsub.exceptions import SnapshotTooLarge
from policy_pubsub.matching import Selector
from policy_pubsub.routers import OutMessage, SharedPart
from policy_pubsub.service.state import Policy, State, Subscription
from policy_pubsub.slices import Slices
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

#: The common end of several snapshots' bodies is kept once from this many characters on
#: (below that the row that holds it costs more than the copies it saves).
SHARED_MIN_CHARS = 128

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


async def change_snapshots(
    state: State,
    changes: Changes,
    revision: int,
    at: int,
    deployed: Deployed,
    slices: Slices | None = None,
) -> ChangeSnapshots:
    """An ``update`` snapshot for every subscriber whose filters match a policy the change
    deploys, replaces or undeploys; ``deployed`` is the policy set with the change applied.
    Built in ``slices`` (the caller holds the state's write lock, so nothing it reads moves
    while the event loop runs between them).
    """
    slices = slices if slices is not None else Slices()
    affected: set[Selector] = set()
    for old, new in changes.values():
        for policy in (old, new):
            if policy is not None:
                affected |= state.index.selectors_matching(policy.policy_id, policy.type)
    messages: list[OutMessage] = []
    notified: list[str] = []
    stamp = rfc3339(at) or ""
    for part, selector in enumerate(affected):
        fragment = orjson.dumps(matching_policies(deployed, selector))
        members = sorted(state.index.members(selector))
        shared = None
        if len(members) > 1 and len(fragment) >= SHARED_MIN_CHARS:
            shared = SharedPart(part, fragment.decode() + "}")
        for subscriber_id in members:
            subscription = state.subscriptions[subscriber_id]
            messages.append(
                snapshot_message(
                    subscription, revision, constants.EVENT_UPDATE, stamp, fragment, shared
                )
            )
            notified.append(subscriber_id)
            if slices.due():
                await slices.pause()
    return ChangeSnapshots(messages, notified)


def snapshot_message(
    subscription: Subscription,
    revision: int,
    event: str,
    stamp: str,
    policies: bytes,
    shared: SharedPart | None = None,
) -> OutMessage:
    """The snapshot message: the subscription's record with ``revision``, ``event``,
    ``timestamp`` and ``policies`` (already serialised) added, keyed by the subscriber id and
    with a de-duplication id unique to the subscriber and revision. ``shared``: the
    policies and the closing brace, as other snapshots of the revision end too.
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
        shared=shared,
    )
