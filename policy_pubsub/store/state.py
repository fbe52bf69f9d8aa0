"""The server's state in the store: policies, subscriptions with their marks, the revision;
and the change log, from which a replica behind the store reads only what changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from policy_pubsub.store import dialects
from policy_pubsub.store.rows import Changes, PolicyRow, Snapshot, SubscriptionRow, TopicRow
from policy_pubsub.store.tables import (
    change_log,
    change_log_floor,
    policies,
    store_revision,
    subscription_marks,
    subscriptions,
    topics,
)

if TYPE_CHECKING:
    from policy_pubsub.store.database import Store

SUBSCRIPTION_COLUMNS = ("subscriber_id", "topic", "body", "revision", "created_at", "updated_at")

#: The kinds of key the change log holds.
POLICY = "p"
SUBSCRIPTION = "s"


class StateRepository:
    """Reads of the state the service keeps in memory (``store.state``); it is written through
    :class:`~policy_pubsub.store.database.WriteTx`.
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    async def revision(self) -> int:
        """The store's current revision."""
        async with self._store.read() as conn:
            return await current_revision(conn)

    async def load(self) -> Snapshot:
        """Everything, as of one revision (one snapshot of the database)."""
        async with self._store.read(consistent=True) as conn:
            return await load_all(conn)

    async def since(self, revision: int) -> Changes | Snapshot | None:
        """From one snapshot of the database: None if the store is still at ``revision``;
        what changed after it, if the change log reaches back that far; else everything.
        """
        async with self._store.read(consistent=True) as conn:
            both = store_revision.join(
                change_log_floor, change_log_floor.c.id == store_revision.c.id
            )
            now, floor = (
                await conn.execute(
                    select(store_revision.c.revision, change_log_floor.c.revision).select_from(both)
                )
            ).one()
            if now == revision:
                return None
            changes = await changes_since(conn, revision, now, floor) if floor <= revision else None
            return changes if changes is not None else await load_all(conn)

    async def prune_log(self, before: int) -> int:
        """Delete the change log's entries written before ``before`` (ms) and raise its floor
        past them; returns how many were deleted.
        """
        async with self._store.write() as tx:
            conn = tx.conn
            last = (
                await conn.execute(
                    select(func.max(change_log.c.revision)).where(change_log.c.created_at < before)
                )
            ).scalar_one()
            if last is None:
                return 0
            await conn.execute(
                update(change_log_floor)
                .where(change_log_floor.c.id == 1, change_log_floor.c.revision < last)
                .values(revision=last)
            )
            result = await conn.execute(delete(change_log).where(change_log.c.revision <= last))
            return int(result.rowcount or 0)


async def current_revision(conn: AsyncConnection) -> int:
    return int((await conn.execute(select(store_revision.c.revision))).scalar_one())


async def load_all(conn: AsyncConnection) -> Snapshot:
    """Everything, read on ``conn`` (inside a write transaction: as of that transaction)."""
    revision = await current_revision(conn)
    policy_rows = [PolicyRow(*row) for row in await conn.execute(select(policies))]
    subscription_rows = await _subscriptions(conn, None)
    topic_rows = [TopicRow(*row) for row in await conn.execute(select(topics))]
    return Snapshot(revision, policy_rows, subscription_rows, topic_rows)


async def changes_since(
    conn: AsyncConnection, revision: int, now: int | None = None, floor: int | None = None
) -> Changes | None:
    """What changed after ``revision`` up to the store's revision ``now`` (read here if not
    given), read on ``conn``; None if the change log was pruned past it (``floor``, if given,
    is the log's floor read in the same snapshot). In one snapshot (a consistent read), or in
    a write transaction that holds the revision lock, so that no change commits in between.
    """
    logged = await conn.execute(
        select(change_log.c.kind, change_log.c.key)
        .where(change_log.c.revision > revision)
        .distinct()
    )
    policy_ids: list[str] = []
    subscriber_ids: list[str] = []
    for kind, key in logged:
        (policy_ids if kind == POLICY else subscriber_ids).append(key)
    if floor is None:
        # Read after the log: a pruning that committed before the log's read shows here.
        floor = (await conn.execute(select(change_log_floor.c.revision))).scalar_one()
    if floor > revision:
        return None
    if now is None:
        now = await current_revision(conn)
    dialect = conn.dialect.name
    policy_rows = (
        [
            PolicyRow(*row)
            for row in await conn.execute(
                select(policies).where(dialects.among(dialect, policies.c.policy_id, policy_ids))
            )
        ]
        if policy_ids
        else []
    )
    subscription_rows = await _subscriptions(conn, subscriber_ids) if subscriber_ids else []
    marks = await conn.execute(
        select(
            subscription_marks.c.subscriber_id,
            subscription_marks.c.last_revision,
            subscription_marks.c.last_published_at,
        ).where(subscription_marks.c.last_revision > revision)
    )
    written_policies = {row.policy_id for row in policy_rows}
    written_subscriptions = {row.subscriber_id for row in subscription_rows}
    return Changes(
        now,
        policy_rows,
        [key for key in policy_ids if key not in written_policies],
        subscription_rows,
        [key for key in subscriber_ids if key not in written_subscriptions],
        {key: (int(last), at) for key, last, at in marks},
    )


async def _subscriptions(conn: AsyncConnection, ids: Sequence[str] | None) -> list[SubscriptionRow]:
    """The subscriptions with their marks: all, or those with these ids."""
    columns: list[Any] = [subscriptions.c[name] for name in SUBSCRIPTION_COLUMNS]
    columns += [subscription_marks.c.last_revision, subscription_marks.c.last_published_at]
    joined = subscriptions.outerjoin(
        subscription_marks, subscription_marks.c.subscriber_id == subscriptions.c.subscriber_id
    )
    query = select(*columns).select_from(joined)
    if ids is not None:
        query = query.where(dialects.among(conn.dialect.name, subscriptions.c.subscriber_id, ids))
    return [SubscriptionRow(*row) for row in await conn.execute(query)]


__all__ = [
    "POLICY",
    "SUBSCRIPTION",
    "SUBSCRIPTION_COLUMNS",
    "StateRepository",
    "changes_since",
    "current_revision",
    "load_all",
]
