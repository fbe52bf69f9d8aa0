"""The server's state in the store: policies, subscriptions with their marks, the revision;
and the change log, from which a replica behind the store reads only what changed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from policy_pubsub.exceptions import StoreUnavailable
from policy_pubsub.store import dialects
from policy_pubsub.store.notify import asyncpg_dsn
from policy_pubsub.store.rows import Changes, PolicyRow, Snapshot, SubscriptionRow, TopicRow
from policy_pubsub.store.tables import (
    change_log,
    change_log_floor,
    mark_log,
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


#: What a replica at revision $1 reads to catch up on PostgreSQL, in one statement (so in one
#: snapshot, with no transaction around it): the store's revision and the change log's floor
#: ("r"); each policy ("p") and subscription ("s") logged after $1 with its row as it is now
#: (NULLs: deleted); and the mark log's rows after $1 ("m").
CHANGES_AFTER = """
WITH logged AS (SELECT DISTINCT kind, key FROM change_log WHERE revision > $1)
SELECT 'r', NULL::text, NULL::text, NULL::text, NULL::text, NULL::text,
       r.revision, f.revision, NULL::bigint, NULL::bigint, NULL::bigint
  FROM store_revision r JOIN change_log_floor f ON f.id = r.id
UNION ALL
SELECT 'p', l.key, p.policy_version, p.policy_type, p.policy_type_version, p.body,
       p.revision, p.deployed_at, NULL, NULL, NULL
  FROM logged l LEFT JOIN policies p ON p.policy_id = l.key
 WHERE l.kind = 'p'
UNION ALL
SELECT 's', l.key, s.topic, NULL, NULL, s.body,
       s.revision, s.created_at, s.updated_at, m.last_revision, m.last_published_at
  FROM logged l LEFT JOIN subscriptions s ON s.subscriber_id = l.key
       LEFT JOIN subscription_marks m ON m.subscriber_id = s.subscriber_id
 WHERE l.kind = 's'
UNION ALL
SELECT 'm', NULL, NULL, NULL, NULL, k.subscribers, k.revision, k.published_at, NULL, NULL, NULL
  FROM mark_log k WHERE k.revision > $1
"""

#: The catch-up connection's name in ``pg_stat_activity``.
APPLICATION_NAME = "policy-pubsub catch-up"

#: How long the catch-up statement may take before the read counts as failed (seconds).
CHANGES_TIMEOUT = 30.0


class ChangeReader:
    """A PostgreSQL connection of its own (asyncpg, outside the pool, in autocommit) on which
    a replica reads what changed since its revision with :data:`CHANGES_AFTER`: one round
    trip, with no pool checkout, pre-ping, BEGIN or COMMIT around it. Opened at the first
    read; a read on a connection that has died meanwhile is tried once more on a new one.
    """

    def __init__(self, url: str) -> None:
        self._dsn = asyncpg_dsn(url)
        self._conn: Any = None
        self._lock = asyncio.Lock()

    async def changes(self, revision: int) -> Changes | Literal[False] | None:
        """None if the store is still at ``revision``; what changed after it; False if the
        change log was pruned past it.
        """
        import asyncpg  # type: ignore[import-untyped]

        async with self._lock:
            for attempt in (1, 2):
                fresh = self._conn is None
                try:
                    if self._conn is None:
                        self._conn = await asyncpg.connect(
                            self._dsn,
                            timeout=CHANGES_TIMEOUT,
                            server_settings={"application_name": APPLICATION_NAME},
                        )
                    rows = await self._conn.fetch(CHANGES_AFTER, revision, timeout=CHANGES_TIMEOUT)
                except (
                    OSError,
                    TimeoutError,
                    asyncpg.PostgresError,
                    asyncpg.InterfaceError,
                ) as exc:
                    await self.close()
                    if fresh or attempt == 2:
                        raise StoreUnavailable(f"store read failed: {exc}") from exc
                    continue
                return _changes(rows, revision)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)


def _changes(rows: Sequence[Any], revision: int) -> Changes | Literal[False] | None:
    now = floor = revision
    policy_rows: list[PolicyRow] = []
    deleted_policies: list[str] = []
    subscription_rows: list[SubscriptionRow] = []
    deleted_subscriptions: list[str] = []
    marked: list[tuple[int, int, str]] = []
    for what, key, t1, t2, t3, body, n1, n2, n3, n4, n5 in rows:
        if what == "r":
            now, floor = n1, n2
        elif what == "p":
            if t1 is None:
                deleted_policies.append(key)
            else:
                policy_rows.append(PolicyRow(key, t1, t2, t3, body, n1, n2))
        elif what == "s":
            if t1 is None:
                deleted_subscriptions.append(key)
            else:
                subscription_rows.append(SubscriptionRow(key, t1, body, n1, n2, n3, n4, n5))
        else:
            marked.append((n1, n2, body))
    if now == revision:
        return None
    if floor > revision:
        return False
    return Changes(
        now,
        policy_rows,
        deleted_policies,
        subscription_rows,
        deleted_subscriptions,
        marks_from(marked),
    )


class StateRepository:
    """Reads of the state the service keeps in memory (``store.state``); it is written through
    :class:`~policy_pubsub.store.database.WriteTx`.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._reader = ChangeReader(store.url) if store.shared else None

    async def close(self) -> None:
        if self._reader is not None:
            await self._reader.close()

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
        if self._reader is not None:
            found = await self._reader.changes(revision)
            return found if found is not False else await self.load()
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
            logged = (
                await conn.execute(
                    select(func.max(change_log.c.revision)).where(change_log.c.created_at < before)
                )
            ).scalar_one()
            marked = (
                await conn.execute(
                    select(func.max(mark_log.c.revision)).where(mark_log.c.published_at < before)
                )
            ).scalar_one()
            if logged is None and marked is None:
                return 0
            last = max(r for r in (logged, marked) if r is not None)
            await conn.execute(
                update(change_log_floor)
                .where(change_log_floor.c.id == 1, change_log_floor.c.revision < last)
                .values(revision=last)
            )
            result = await conn.execute(delete(change_log).where(change_log.c.revision <= last))
            await conn.execute(delete(mark_log).where(mark_log.c.revision <= last))
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
    Always None on SQLite, which keeps no change log (``WriteTx``): one process owns such a
    store, and a second one that wrote to the file meanwhile is caught up with by reading it
    all.
    """
    if conn.dialect.name == "sqlite":
        return None
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
    marked = await conn.execute(
        select(mark_log.c.revision, mark_log.c.published_at, mark_log.c.subscribers).where(
            mark_log.c.revision > revision
        )
    )
    written_policies = {row.policy_id for row in policy_rows}
    written_subscriptions = {row.subscriber_id for row in subscription_rows}
    return Changes(
        now,
        policy_rows,
        [key for key in policy_ids if key not in written_policies],
        subscription_rows,
        [key for key in subscriber_ids if key not in written_subscriptions],
        marks_from(marked),
    )


def marks_from(logged: Iterable[tuple[int, int, str]]) -> dict[str, tuple[int, int | None]]:
    """The newest mark of each subscriber, from mark log rows (revision, at, ids)."""
    marks: dict[str, tuple[int, int | None]] = {}
    for revision, at, ids in sorted(logged, key=lambda row: row[0]):
        mark = (int(revision), int(at))
        for subscriber_id in ids.split(","):
            marks[subscriber_id] = mark
    return marks


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
    "CHANGES_AFTER",
    "POLICY",
    "SUBSCRIPTION",
    "SUBSCRIPTION_COLUMNS",
    "ChangeReader",
    "StateRepository",
    "changes_since",
    "current_revision",
    "load_all",
    "marks_from",
]
