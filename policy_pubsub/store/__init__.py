"""The SQL store (SQLite or PostgreSQL through SQLAlchemy): the source of truth."""

from __future__ import annotations

from policy_pubsub.store.database import (
    GroupRow,
    PolicyRow,
    Snapshot,
    Store,
    SubscriptionRow,
    TopicRow,
    WriteTx,
    now_ms,
)

__all__ = [
    "GroupRow",
    "PolicyRow",
    "Snapshot",
    "Store",
    "SubscriptionRow",
    "TopicRow",
    "WriteTx",
    "now_ms",
]
