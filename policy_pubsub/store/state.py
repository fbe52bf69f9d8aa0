"""The server's state in the store: policies, subscriptions with their marks, the revision."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from policy_pubsub.store.rows import PolicyRow, Snapshot, SubscriptionRow, TopicRow
from policy_pubsub.store.tables import (
    policies,
    store_revision,
    subscription_marks,
    subscriptions,
    topics,
)

if TYPE_CHECKING:
    from policy_pubsub.store.database import Store

SUBSCRIPTION_COLUMNS = ("subscriber_id", "topic", "body", "revision", "created_at", "updated_at")


class StateRepository:
    """Reads of the state the service keeps in memory (``store.state``); it is written through
    :class:`~policy_pubsub.store.database.WriteTx`.
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    async def revision(self) -> int:
        """The store's current revision."""
        async with self._store.read() as conn:
            return int((await conn.execute(select(store_revision.c.revision))).scalar_one())

    async def load(self) -> Snapshot:
        """Everything, as of one revision (one snapshot of the database)."""
        async with self._store.read(consistent=True) as conn:
            return await load_all(conn)


async def load_all(conn: AsyncConnection) -> Snapshot:
    """Everything, read on ``conn`` (inside a write transaction: as of that transaction)."""
    revision = (await conn.execute(select(store_revision.c.revision))).scalar_one()
    policy_rows = [PolicyRow(*row) for row in await conn.execute(select(policies))]
    columns: list[Any] = [subscriptions.c[name] for name in SUBSCRIPTION_COLUMNS]
    columns += [subscription_marks.c.last_revision, subscription_marks.c.last_published_at]
    joined = subscriptions.outerjoin(
        subscription_marks, subscription_marks.c.subscriber_id == subscriptions.c.subscriber_id
    )
    subscription_rows = [
        SubscriptionRow(*row) for row in await conn.execute(select(*columns).select_from(joined))
    ]
    topic_rows = [TopicRow(*row) for row in await conn.execute(select(topics))]
    return Snapshot(int(revision), policy_rows, subscription_rows, topic_rows)


__all__ = ["SUBSCRIPTION_COLUMNS", "StateRepository", "load_all"]
