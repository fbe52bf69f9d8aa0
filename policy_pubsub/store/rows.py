"""The records the store reads and writes, one frozen dataclass per table row it returns."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PolicyRow:
    policy_id: str
    policy_version: str
    policy_type: str
    policy_type_version: str | None
    body: str
    revision: int
    deployed_at: int


@dataclass(frozen=True, slots=True)
class SubscriptionRow:
    subscriber_id: str
    topic: str
    body: str
    revision: int
    created_at: int
    updated_at: int
    last_revision: int | None
    last_published_at: int | None


@dataclass(frozen=True, slots=True)
class GroupRow:
    topic: str
    name: str
    position: int
    last_consumed_at: int | None


@dataclass(frozen=True, slots=True)
class TopicRow:
    name: str
    last_offset: int
    created_at: int
    last_published_at: int | None
    #: Its offsets start after this one (see ``tables.topics``).
    base_offset: int = 0
    emptied_at: int | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the store holds, read in one transaction at one revision."""

    revision: int
    policies: list[PolicyRow]
    subscriptions: list[SubscriptionRow]
    topics: list[TopicRow]


@dataclass(frozen=True, slots=True)
class Changes:
    """What changed in the store after one revision, up to ``revision``: the policies and
    subscriptions written since, as they are now, the ids of those deleted since, and the
    published marks that moved since (subscriber id -> last revision, published at).
    """

    revision: int
    policies: list[PolicyRow]
    deleted_policies: list[str]
    subscriptions: list[SubscriptionRow]
    deleted_subscriptions: list[str]
    marks: dict[str, tuple[int, int | None]]


__all__ = ["Changes", "GroupRow", "PolicyRow", "Snapshot", "SubscriptionRow", "TopicRow"]
