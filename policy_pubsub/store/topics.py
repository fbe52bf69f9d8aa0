"""The embedded topic log: topics, their messages, retention and compaction.

Messages are appended inside the write transaction of the change that causes them
(:meth:`~policy_pubsub.store.database.WriteTx.append`); this repository reads the log and
trims it. Every router records its topics here, so every replica lists the same ones.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Select,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    select,
    text,
    tuple_,
    union,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from policy_pubsub.store import dialects
from policy_pubsub.store.rows import GroupRow, TopicRow
from policy_pubsub.store.tables import (
    TOPIC_OFFSET_FLOOR,
    consumer_groups,
    messages,
    outbox,
    snapshot_bodies,
    store_counters,
    subscriptions,
    topics,
)

if TYPE_CHECKING:
    from policy_pubsub.store.database import Store

#: Retention, compaction and the drop of orphans delete at most this many messages per
#: transaction (see ``TopicRepository._drop``).
CHUNK_ROWS = 2000
#: Hears, inside the transaction that drops messages, the highest offset dropped of each
#: topic it touched.
Dropped = Callable[[Mapping[str, int]], Awaitable[None]]


class TopicRepository:
    """Topics and their retained messages (``store.topics``)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def heads(self) -> dict[str, int]:
        """Each topic's last offset."""
        async with self._store.read() as conn:
            result = await conn.execute(select(topics.c.name, topics.c.last_offset))
            return {name: int(last) for name, last in result}

    async def get(self, name: str) -> TopicRow | None:
        """The topic, or None if it does not exist."""
        async with self._store.read() as conn:
            row = (await conn.execute(select(topics).where(topics.c.name == name))).first()
            return None if row is None else TopicRow(*row)

    async def names(self) -> list[str]:
        """The names of all topics, sorted."""
        async with self._store.read() as conn:
            result = await conn.execute(select(topics.c.name).order_by(topics.c.name))
            return list(result.scalars())

    async def details(self, name: str) -> tuple[TopicRow, int, list[GroupRow]] | None:
        """The topic, the number of messages it retains, and its consumer groups."""
        async with self._store.read() as conn:
            row = (await conn.execute(select(topics).where(topics.c.name == name))).first()
            if row is None:
                return None
            count = (
                await conn.execute(
                    select(func.count()).select_from(messages).where(messages.c.topic == name)
                )
            ).scalar_one()
            groups = await conn.execute(
                select(consumer_groups)
                .where(consumer_groups.c.topic == name)
                .order_by(consumer_groups.c.name)
            )
            return TopicRow(*row), int(count), [GroupRow(*g) for g in groups]

    async def lag_figures(self) -> dict[str, tuple[int, int, int | None, int]]:
        """What consumer lag is computed from, for every topic at once, in one statement:
        each topic's last offset, its base offset (its offsets start after it), the position
        of its slowest consumer group (None without one), and, only for a topic without a
        group, how many messages it retains (0 for the others: their lag does not need it).
        """
        slowest = (
            select(consumer_groups.c.topic, func.min(consumer_groups.c.position).label("p"))
            .group_by(consumer_groups.c.topic)
            .subquery()
        )
        retained = (
            select(func.count())
            .select_from(messages)
            .where(messages.c.topic == topics.c.name)
            .scalar_subquery()
        )
        async with self._store.read() as conn:
            if self._store.shared:
                # Its estimated cost over all topics passes jit_above_cost, and compiling the
                # plan (about 55 ms) costs more than running it.
                await conn.execute(text("SET LOCAL jit = off"))
            result = await conn.execute(
                select(
                    topics.c.name,
                    topics.c.last_offset,
                    topics.c.base_offset,
                    slowest.c.p,
                    case((slowest.c.p.is_(None), retained), else_=0),
                )
                .select_from(topics)
                .outerjoin(slowest, slowest.c.topic == topics.c.name)
            )
            return {
                name: (int(last), int(base), None if p is None else int(p), int(n))
                for name, last, base, p, n in result
            }

    async def bases(self, names: Sequence[str]) -> dict[str, int]:
        """The base offset of each of the named topics whose offsets do not start at 1 (made
        after topic rows were dropped: see ``tables.topics``); the others left out.
        """
        if not names:
            return {}
        async with self._store.read() as conn:
            result = await conn.execute(
                select(topics.c.name, topics.c.base_offset).where(
                    dialects.among(self._store.dialect, topics.c.name, names),
                    topics.c.base_offset > 0,
                )
            )
            return {name: int(base) for name, base in result}

    async def counts(self, names: Sequence[str]) -> dict[str, int]:
        """How many messages each of the named topics retains (topics with none left out)."""
        if not names:
            return {}
        async with self._store.read() as conn:
            result = await conn.execute(
                select(messages.c.topic, func.count())
                .where(dialects.among(self._store.dialect, messages.c.topic, names))
                .group_by(messages.c.topic)
            )
            return {topic: int(n) for topic, n in result}

    async def messages(self, topic: str, after: int, limit: int) -> list[tuple[int, str]]:
        """At most ``limit`` retained messages after offset ``after``, as (offset, body),
        oldest first.
        """
        async with self._store.read() as conn:
            result = await conn.execute(messages_after(topic, after, limit))
            return [(row.seq, row.body) for row in result]

    async def oldest_after(self, topic: str, seq: int) -> int | None:
        """When the oldest retained message after ``seq`` was published, if there is one."""
        async with self._store.read() as conn:
            result = await conn.execute(
                select(func.min(messages.c.created_at)).where(
                    messages.c.topic == topic, messages.c.seq > seq
                )
            )
            at = result.scalar_one_or_none()
            return None if at is None else int(at)

    async def expire(self, before_ms: int, *, dropped: Dropped | None = None) -> int:
        """Drop messages published before ``before_ms``, in chunks (see :meth:`_drop`);
        returns how many.
        """
        return await self._drop(lambda m: m.c.created_at < before_ms, dropped)

    async def compact(self, *, dropped: Dropped | None = None) -> int:
        """Drop every snapshot that a newer snapshot of the same subscriber on the same topic
        supersedes, in chunks (see :meth:`_drop`); returns how many.
        """

        def superseded(m: FromClause) -> ColumnElement[bool]:
            newer = messages.alias("newer")
            return and_(
                m.c.key.is_not(None),
                exists().where(
                    newer.c.topic == m.c.topic,
                    newer.c.key == m.c.key,
                    newer.c.seq > m.c.seq,
                ),
            )

        count = await self._drop(superseded, dropped)
        # Every maintenance pass compacts: bodies left unused by anything (expiry,
        # compaction, an unsubscribe, a crash between) go here at the latest.
        async with self._store.write() as tx:
            await drop_unused_bodies(tx.conn)
        return count

    async def drop_orphans(
        self,
        *,
        dropped: Dropped | None = None,
        groups_dropped: Callable[[Sequence[str]], None] | None = None,
    ) -> int:
        """Drop what outlived its owner; returns how many rows. Snapshots whose subscriber no
        longer subscribes on their topic (left while the server was down, or before
        unsubscribing dropped them; in chunks, see :meth:`_drop`); consumer groups of
        topics that retain no message and that no subscription uses: such a group's
        position says nothing a new group would not (offsets never go back, and a new group
        starts at the oldest message); and then the rows of the topics their last
        subscription emptied (see :meth:`drop_emptied`). ``groups_dropped``, if given,
        hears the topics whose groups or rows went, once that committed.
        """
        touched: set[str] = set()

        async def heard(highest: Mapping[str, int]) -> None:
            touched.update(highest)
            if dropped is not None:
                await dropped(highest)

        snapshots = await self._drop(
            lambda m: and_(
                m.c.key.is_not(None),
                ~exists().where(
                    subscriptions.c.subscriber_id == m.c.key,
                    subscriptions.c.topic == m.c.topic,
                ),
            ),
            heard,
        )
        if touched:
            await self._mark_emptied(sorted(touched))
        async with self._store.write() as tx:
            groups = (
                await tx.conn.execute(
                    delete(consumer_groups)
                    .where(
                        ~exists().where(messages.c.topic == consumer_groups.c.topic),
                        ~exists().where(subscriptions.c.topic == consumer_groups.c.topic),
                    )
                    .returning(consumer_groups.c.topic)
                )
            ).all()
        if groups and groups_dropped is not None:
            groups_dropped(sorted({topic for (topic,) in groups}))
        emptied = await self.drop_emptied()
        if emptied and groups_dropped is not None:
            groups_dropped(emptied)
        return snapshots + len(groups) + len(emptied)

    async def _mark_emptied(self, names: Sequence[str]) -> None:
        """Mark emptied those of the topics that no subscription uses and that retain no
        message: orphan snapshots were their last messages (their subscriptions went without
        dropping them: an older server's, or a crash between), so they are treated as topics
        their last subscription left.
        """
        chosen = topics.alias("chosen")
        unmarked = (
            select(chosen.c.name)
            .where(
                dialects.among(self._store.dialect, chosen.c.name, names),
                chosen.c.emptied_at.is_(None),
                ~exists().where(messages.c.topic == chosen.c.name),
                ~exists().where(subscriptions.c.topic == chosen.c.name),
            )
            # Rows a transaction under way holds are left unmarked rather than waited for,
            # so this never waits on one topic row while holding another.
            .with_for_update(skip_locked=True)
        )
        async with self._store.write() as tx:
            await dialects.offset_floor(tx.conn)  # before the topic rows: see drop_emptied
            await tx.conn.execute(
                update(topics)
                .where(topics.c.name.in_(unmarked))
                .values(emptied_at=int(time.time() * 1000))
            )

    async def drop_emptied(self) -> list[str]:
        """Drop the rows of the topics marked emptied (their last subscription left them)
        that nothing uses any more: no message, no consumer group, no subscription, no
        outbox row; returns their names, sorted. A topic a DMaaP client publishes to is
        never marked, and appending to a marked one clears its mark: such topics keep
        their rows, as a DMaaP MR keeps its topics.

        The store's offset floor is raised to the highest last offset dropped, in the same
        transaction, so that a topic made again under a dropped name starts above every
        offset the dropped row handed out: a head or group position a replica still holds
        for it is below the new offsets (it sees them as new messages), and no offset means
        two messages. On PostgreSQL the floor row is locked first, exclusively: a
        transaction that makes topic rows reads the floor under a shared lock taken before
        any topic row (``dialects.advance_topics``), so it waits for this one and reads the
        raised floor, or this one waits for it, and then sees its messages. Rows locked by
        a transaction under way (one appending to the topic, or marking it) are skipped,
        never waited for while the floor is held: the next pass takes them. Every
        transaction that locks topic rows takes the floor's shared lock before the first of
        them, so none holds a topic row while it waits for the floor behind this one.
        """
        async with self._store.write() as tx:
            floor = await dialects.offset_floor_for_update(tx.conn)
            doomed = (
                select(topics.c.name)
                .where(
                    topics.c.emptied_at.is_not(None),
                    ~exists().where(messages.c.topic == topics.c.name),
                    ~exists().where(consumer_groups.c.topic == topics.c.name),
                    ~exists().where(subscriptions.c.topic == topics.c.name),
                    ~exists().where(outbox.c.topic == topics.c.name),
                )
                .with_for_update(skip_locked=True)
            )
            rows = (
                await tx.conn.execute(
                    delete(topics)
                    .where(topics.c.name.in_(doomed))
                    .returning(topics.c.name, topics.c.last_offset)
                )
            ).all()
            if not rows:
                return []
            highest = max(int(last) for _, last in rows)
            if highest > floor:
                await tx.conn.execute(
                    update(store_counters)
                    .where(store_counters.c.name == TOPIC_OFFSET_FLOOR)
                    .values(value=highest)
                )
        return sorted(name for name, _ in rows)

    async def offset_floor(self) -> int:
        """The store's topic offset floor (see ``tables.TOPIC_OFFSET_FLOOR``)."""
        async with self._store.read() as conn:
            result = await conn.execute(
                select(store_counters.c.value).where(store_counters.c.name == TOPIC_OFFSET_FLOOR)
            )
            return int(result.scalar_one_or_none() or 0)

    async def unused(self, names: Sequence[str]) -> list[str]:
        """Of the named topics, those that no subscription uses and that retain no message,
        sorted, whether or not their row is still there: what :meth:`drop_orphans` drops the
        consumer groups of, and later the row.
        """
        if not names:
            return []
        dialect = self._store.dialect
        async with self._store.read() as conn:
            used = set(
                (
                    await conn.execute(
                        union(
                            select(subscriptions.c.topic).where(
                                dialects.among(dialect, subscriptions.c.topic, names)
                            ),
                            select(messages.c.topic)
                            .where(dialects.among(dialect, messages.c.topic, names))
                            .distinct(),
                        )
                    )
                ).scalars()
            )
        return sorted(set(names) - used)

    async def _drop(
        self, which: Callable[[FromClause], ColumnElement[bool]], dropped: Dropped | None
    ) -> int:
        """Delete the messages ``which`` selects (given the messages table) and the shared
        bodies they leave unused, at most ``CHUNK_ROWS`` per transaction, until none is
        left; returns how many. One statement over everything would put every page it
        touches into the WAL at once (compacting 15,000 snapshots: some 16 MB). Before each
        chunk the store checkpoints the WAL (``Store.settle_wal``), so the chunk can start
        it over instead of adding to it; between two chunks other writes take their turn.
        ``dropped``, if given, hears the highest offset dropped of each topic a chunk
        touched, inside the chunk's transaction, before it commits.
        """
        chosen = messages.alias("chosen")
        total = 0
        while True:
            await self._store.settle_wal()
            doomed = select(chosen.c.topic, chosen.c.seq).where(which(chosen)).limit(CHUNK_ROWS)
            async with self._store.write() as tx:
                rows = (
                    await tx.conn.execute(
                        delete(messages)
                        .where(tuple_(messages.c.topic, messages.c.seq).in_(doomed))
                        .returning(
                            messages.c.topic, messages.c.seq, messages.c.revision, messages.c.part
                        )
                    )
                ).all()
                if not rows:
                    return total
                await drop_unused_bodies(
                    tx.conn, [(revision, part) for _, _, revision, part in rows if part is not None]
                )
                if dropped is not None:
                    highest: dict[str, int] = {}
                    for topic, seq, _, _ in rows:
                        if seq > highest.get(topic, -1):
                            highest[topic] = int(seq)
                    await dropped(highest)
            total += len(rows)
            if len(rows) < CHUNK_ROWS:
                return total


def messages_after(topic: str, after: int, limit: int) -> Select[tuple[int, str]]:
    """The statement that reads at most ``limit`` messages of ``topic`` after offset ``after``,
    as (seq, body), oldest first: a body kept in part in ``snapshot_bodies`` is put together.
    """
    shared = and_(
        snapshot_bodies.c.revision == messages.c.revision,
        snapshot_bodies.c.part == messages.c.part,
    )
    return (
        select(
            messages.c.seq,
            (messages.c.body + func.coalesce(snapshot_bodies.c.body, "")).label("body"),
        )
        .select_from(messages.outerjoin(snapshot_bodies, shared))
        .where(messages.c.topic == topic, messages.c.seq > after)
        .order_by(messages.c.seq)
        .limit(limit)
    )


async def drop_unused_bodies(
    conn: AsyncConnection, parts: Sequence[tuple[int, int]] | None = None
) -> None:
    """Delete the shared snapshot bodies no message uses any more: of ``parts`` ((revision,
    part) of messages just deleted), or all of them (None).
    """
    unused = ~exists().where(
        messages.c.revision == snapshot_bodies.c.revision,
        messages.c.part == snapshot_bodies.c.part,
    )
    if parts is None:
        await conn.execute(delete(snapshot_bodies).where(unused))
        return
    if parts:
        await conn.execute(
            delete(snapshot_bodies).where(
                snapshot_bodies.c.revision == bindparam("r"),
                snapshot_bodies.c.part == bindparam("p"),
                unused,
            ),
            [{"r": r, "p": p} for r, p in sorted(set(parts))],
        )


__all__ = ["CHUNK_ROWS", "Dropped", "TopicRepository", "drop_unused_bodies", "messages_after"]
