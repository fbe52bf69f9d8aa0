"""Snapshots as the subscriber sees them, and the change between two of them.

A snapshot message on a topic is a JSON object (sent as a JSON string by DMaaP Message Router
and the embedded router) holding ``subscriber_id``, ``revision``, ``event`` and ``policies``,
the full set of policies matching the subscription as of ``revision``. Only the newest one
matters, so a change is always computed between two whole snapshots.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from policy_pubsub import constants

log = logging.getLogger("policy_pubsub.client")

Policy = Mapping[str, Any]
Policies = Mapping[str, Policy]

NO_REVISION = -1  # the revision of "nothing applied yet"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every policy a subscriber holds (or should hold) as of ``revision``."""

    revision: int
    policies: Policies
    event: str = constants.EVENT_UPDATE

    def same_policies(self, other: Snapshot) -> bool:
        return dict(self.policies) == dict(other.policies)


EMPTY = Snapshot(NO_REVISION, {}, constants.EVENT_SUBSCRIBE)


@dataclass(frozen=True, slots=True)
class PolicyChange:
    """What a new snapshot changes for the component, computed against what it holds.

    ``added`` and ``updated`` map policy-id to the new policy, ``removed`` holds the
    policy-ids that are gone, ``policies`` is the whole new snapshot, ``previous`` the snapshot
    it replaces (for example to show an updated policy's old version), ``event`` where the
    snapshot came from: ``update`` (a policy change), ``subscribe`` (a (re)subscription) or
    ``resync`` (a re-read of the subscription's policies). Treat the mappings as read-only.
    """

    revision: int
    added: Policies
    updated: Policies
    removed: frozenset[str]
    policies: Policies
    previous: Policies = field(default_factory=dict)
    event: str = constants.EVENT_UPDATE

    @classmethod
    def between(cls, held: Snapshot, new: Snapshot) -> PolicyChange:
        """The change from the ``held`` snapshot to the ``new`` one."""
        old = held.policies
        return cls(
            revision=new.revision,
            added={pid: policy for pid, policy in new.policies.items() if pid not in old},
            updated={
                pid: policy
                for pid, policy in new.policies.items()
                if pid in old and dict(old[pid]) != dict(policy)
            },
            removed=frozenset(pid for pid in old if pid not in new.policies),
            policies=dict(new.policies),
            previous=dict(old),
            event=new.event,
        )

    @property
    def empty(self) -> bool:
        """True when nothing was added, updated or removed."""
        return not (self.added or self.updated or self.removed)


def valid_policies(value: Any) -> dict[str, dict[str, Any]] | None:
    """``value`` as a policy-id -> policy mapping, or None when it is not one."""
    if not isinstance(value, dict):
        return None
    if not all(isinstance(k, str) and isinstance(v, dict) for k, v in value.items()):
        return None
    return value


def snapshots(messages: list[Any], subscriber_id: str) -> Iterator[Snapshot]:
    """The snapshots of ``subscriber_id`` among the messages of one poll, oldest first.

    Messages are JSON strings (DMaaP) or objects (tolerated); anything that is not a snapshot
    of this subscriber (another subscriber's on a shared topic, or something else entirely)
    is skipped.
    """
    for item in messages:
        message = _decode(item)
        if message is None:
            log.debug("skipping a message that is not a JSON object: %.200r", item)
            continue
        if message.get("subscriber_id") != subscriber_id:
            continue
        revision = message.get("revision")
        policies = valid_policies(message.get("policies"))
        if not isinstance(revision, int) or isinstance(revision, bool) or policies is None:
            log.warning("skipping a malformed snapshot for %s: %.200r", subscriber_id, item)
            continue
        event = message.get("event")
        yield Snapshot(revision, policies, event if isinstance(event, str) else "update")


def addressed_to(item: Any, subscriber_id: str) -> bool:
    """Whether the message ``item`` is addressed to ``subscriber_id`` (its ``subscriber_id``
    field), snapshot or not; what is not a JSON object is addressed to no one.
    """
    message = _decode(item)
    return message is not None and message.get("subscriber_id") == subscriber_id


def _decode(item: Any) -> dict[str, Any] | None:
    # A message published as text rather than JSON comes back encoded twice: decode twice.
    for _ in range(2):
        if isinstance(item, dict):
            return item
        if not isinstance(item, str):
            return None
        try:
            item = json.loads(item)
        except ValueError:
            return None
    return item if isinstance(item, dict) else None
