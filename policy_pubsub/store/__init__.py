"""The SQL store (SQLite or PostgreSQL through SQLAlchemy): the source of truth."""

from __future__ import annotations

from policy_pubsub.store.database import Store, WriteTx, now_ms
from policy_pubsub.store.dead_letters import DeadLetter, DeadLetterRepository
from policy_pubsub.store.leader import LeaderLock, leadership
from policy_pubsub.store.outbox import OutboxRepository
from policy_pubsub.store.positions import GroupClaim, PositionRepository
from policy_pubsub.store.rows import (
    Changes,
    GroupRow,
    PolicyRow,
    Snapshot,
    SubscriptionRow,
    TopicRow,
)
from policy_pubsub.store.signatures import SignatureRepository
from policy_pubsub.store.state import StateRepository
from policy_pubsub.store.topics import TopicRepository

__all__ = [
    "Changes",
    "DeadLetter",
    "DeadLetterRepository",
    "GroupClaim",
    "GroupRow",
    "LeaderLock",
    "OutboxRepository",
    "PolicyRow",
    "PositionRepository",
    "SignatureRepository",
    "Snapshot",
    "StateRepository",
    "Store",
    "SubscriptionRow",
    "TopicRepository",
    "TopicRow",
    "WriteTx",
    "leadership",
    "now_ms",
]
