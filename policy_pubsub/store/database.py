"""The SQL store: the one source of truth for policies, subscriptions and embedded topics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    BigInteger,
    Connection,
    and_,
    delete,
    exists,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from policy_pubsub.exceptions import StoreUnavailable
from policy_pubsub.routers.messages import OutMessage
from policy_pubsub.store import dialects
from policy_pubsub.store.notify import REVISION_CHANNEL, TOPICS_CHANNEL, Notifications
from policy_pubsub.store.tables import (
    consumer_groups,
    messages,
    outbox,
    policies,
    store_revision,
    subscription_marks,
    subscriptions,
    topics,
)

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
MESSAGE_COLUMNS = ("topic", "seq", "key", "revision", "body", "created_at")
TOPIC_COLUMNS = ("name", "last_offset", "created_at", "last_published_at")
OUTBOX_COLUMNS = ("topic", "key", "revision", "dedup_id", "body", "created_at")
SUBSCRIPTION_COLUMNS = ("subscriber_id", "topic", "body", "revision", "created_at", "updated_at")


def now_ms() -> int:
    return int(time.time() * 1000)


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


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the store holds, read in one transaction at one revision."""

    revision: int
    policies: list[PolicyRow]
    subscriptions: list[SubscriptionRow]
    topics: list[TopicRow]


class Store:
    """SQLAlchemy Core over SQLite (aiosqlite) or PostgreSQL (asyncpg)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._reader, self._writer = dialects.create_engines(url)
        self.dialect = self._writer.dialect.name
        #: Several processes share the store (PostgreSQL): in-process state is only a cache.
        self.shared = self.dialect == "postgresql"
        # SQLite has one writer connection; the database itself serialises PostgreSQL writers.
        self._write_lock = None if self.shared else asyncio.Lock()
        self.notifications = Notifications(url) if self.shared else None

    async def open(self) -> None:
        """Create or upgrade the schema to the newest migration."""
        try:
            async with self._writer.connect() as conn:
                await conn.run_sync(_upgrade)
                await conn.commit()
        except (SQLAlchemyError, OSError) as exc:
            raise StoreUnavailable(f"cannot open the store: {exc}") from exc
        if self.notifications is not None:
            self.notifications.start()

    async def close(self) -> None:
        if self.notifications is not None:
            await self.notifications.close()
        await self._reader.dispose()
        if self._writer is not self._reader:
            await self._writer.dispose()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[WriteTx]:
        """One write transaction; committed when the block ends without an exception.

        Writers within this process take turns; the database serialises them across processes.
        """
        async with self._write_lock or contextlib.nullcontext():
            try:
                async with self._writer.begin() as conn:
                    yield WriteTx(conn, self.dialect)
            except (SQLAlchemyError, OSError) as exc:
                raise StoreUnavailable(f"store write failed: {exc}") from exc

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._reader.begin() as conn:
                yield conn
        except (SQLAlchemyError, OSError) as exc:
            raise StoreUnavailable(f"store read failed: {exc}") from exc

    async def revision(self) -> int:
        async with self.read() as conn:
            return int((await conn.execute(select(store_revision.c.revision))).scalar_one())

    async def topic_heads(self) -> dict[str, int]:
        async with self.read() as conn:
            result = await conn.execute(select(topics.c.name, topics.c.last_offset))
            return {name: int(last) for name, last in result}

    @asynccontextmanager
    async def claim_group(self, topic: str, name: str) -> AsyncIterator[GroupClaim]:
        """Lock a consumer group's position until the block ends (shared stores): the claim
        reads messages after the position and may advance it; nothing else moves it meanwhile.
        Committed if advanced, else rolled back.
        """
        try:
            async with self._writer.connect() as conn:
                await conn.begin()
                await conn.execute(
                    dialects.insert_ignore(self.dialect, consumer_groups),
                    [{"topic": topic, "name": name, "position": 0, "last_consumed_at": None}],
                )
                row = (
                    await conn.execute(
                        select(consumer_groups.c.position)
                        .where(consumer_groups.c.topic == topic, consumer_groups.c.name == name)
                        .with_for_update()
                    )
                ).one()
                claim = GroupClaim(conn, topic, name, int(row[0]))
                try:
                    yield claim
                finally:
                    if claim.advanced:
                        await conn.commit()
                    else:
                        await conn.rollback()
        except (SQLAlchemyError, OSError) as exc:
            raise StoreUnavailable(f"store read failed: {exc}") from exc

    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.execute(select(store_revision.c.revision))

    async def load(self) -> Snapshot:
        """Everything, as of one revision (one snapshot of the database)."""
        try:
            async with self._reader.connect() as conn:
                if self.shared:
                    conn = await conn.execution_options(isolation_level="REPEATABLE READ")
                async with conn.begin():
                    return await load_all(conn)
        except (SQLAlchemyError, OSError) as exc:
            raise StoreUnavailable(f"store read failed: {exc}") from exc

    # -- the embedded router's reads -------------------------------------------------------

    async def read_messages(self, topic: str, after: int, limit: int) -> list[tuple[int, str]]:
        async with self.read() as conn:
            result = await conn.execute(
                select(messages.c.seq, messages.c.body)
                .where(messages.c.topic == topic, messages.c.seq > after)
                .order_by(messages.c.seq)
                .limit(limit)
            )
            return [(row.seq, row.body) for row in result]

    async def topic(self, name: str) -> TopicRow | None:
        async with self.read() as conn:
            row = (await conn.execute(select(topics).where(topics.c.name == name))).first()
            return None if row is None else TopicRow(*row)

    async def topic_names(self) -> list[str]:
        async with self.read() as conn:
            result = await conn.execute(select(topics.c.name).order_by(topics.c.name))
            return list(result.scalars())

    async def topic_details(self, name: str) -> tuple[TopicRow, int, list[GroupRow]] | None:
        """The topic, the number of messages it retains, and its consumer groups."""
        async with self.read() as conn:
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

    async def group(self, topic: str, name: str) -> GroupRow | None:
        async with self.read() as conn:
            row = (
                await conn.execute(
                    select(consumer_groups).where(
                        consumer_groups.c.topic == topic, consumer_groups.c.name == name
                    )
                )
            ).first()
            return None if row is None else GroupRow(*row)

    async def oldest_after(self, topic: str, seq: int) -> int | None:
        """When the oldest retained message after ``seq`` was published, if there is one."""
        async with self.read() as conn:
            result = await conn.execute(
                select(func.min(messages.c.created_at)).where(
                    messages.c.topic == topic, messages.c.seq > seq
                )
            )
            at = result.scalar_one_or_none()
            return None if at is None else int(at)

    # -- the embedded router's writes ------------------------------------------------------

    async def save_positions(self, rows: Sequence[GroupRow]) -> None:
        if not rows:
            return
        async with self.write() as tx:
            await tx.conn.execute(
                dialects.upsert(
                    self.dialect,
                    consumer_groups,
                    keys=("topic", "name"),
                    update=("position", "last_consumed_at"),
                    never_lower=("position",),
                ),
                [
                    {
                        "topic": r.topic,
                        "name": r.name,
                        "position": r.position,
                        "last_consumed_at": r.last_consumed_at,
                    }
                    for r in rows
                ],
            )

    async def expire_messages(self, before_ms: int) -> int:
        """Drop messages published before ``before_ms``; returns how many."""
        async with self.write() as tx:
            result = await tx.conn.execute(
                delete(messages).where(messages.c.created_at < before_ms)
            )
            return int(result.rowcount or 0)

    async def compact(self) -> int:
        """Drop every snapshot that a newer snapshot of the same subscriber on the same topic
        supersedes; returns how many.
        """
        newer = messages.alias("newer")
        async with self.write() as tx:
            result = await tx.conn.execute(
                delete(messages).where(
                    messages.c.key.is_not(None),
                    exists().where(
                        and_(
                            newer.c.topic == messages.c.topic,
                            newer.c.key == messages.c.key,
                            newer.c.seq > messages.c.seq,
                        )
                    ),
                )
            )
            return int(result.rowcount or 0)

    # -- the outbox ---------------------------------------------------------------------------

    async def outbox_batch(self, limit: int, after: int = 0) -> list[tuple[int, OutMessage]]:
        """The oldest messages waiting in the outbox with an id above ``after``, in the order
        they were written (the relay reads its next batch while the one before is published).
        """
        async with self.read() as conn:
            result = await conn.execute(
                select(
                    outbox.c.id,
                    outbox.c.topic,
                    outbox.c.body,
                    outbox.c.key,
                    outbox.c.revision,
                    outbox.c.dedup_id,
                )
                .where(outbox.c.id > after)
                .order_by(outbox.c.id)
                .limit(limit)
            )
            return [(row[0], OutMessage(*row[1:])) for row in result]

    async def outbox_delete(self, ids: Sequence[int]) -> None:
        if ids:
            async with self.write() as tx:
                await tx.conn.execute(delete(outbox).where(outbox.c.id.in_(list(ids))))

    async def outbox_stats(self) -> tuple[int, int | None]:
        """How many messages wait in the outbox, and when the oldest was written."""
        async with self.read() as conn:
            row = (await conn.execute(select(func.count(), func.min(outbox.c.created_at)))).one()
            return int(row[0]), None if row[1] is None else int(row[1])

    @asynccontextmanager
    async def leadership(self, name: str) -> AsyncIterator[LeaderLock]:
        """A lock that at most one process holds at a time, kept on its own connection."""
        lock = LeaderLock(self, name)
        try:
            yield lock
        finally:
            await lock.release()

    async def groups(self) -> list[GroupRow]:
        """Every consumer group's position (a router loads them all when it starts)."""
        async with self.read() as conn:
            result = await conn.execute(select(consumer_groups))
            return [GroupRow(*row) for row in result]


class GroupClaim:
    """A consumer group's position, locked for one delivery."""

    def __init__(self, conn: AsyncConnection, topic: str, name: str, position: int) -> None:
        self._conn = conn
        self.topic = topic
        self.name = name
        self.position = position
        self.advanced = False

    async def read(self, limit: int) -> list[tuple[int, str]]:
        result = await self._conn.execute(
            select(messages.c.seq, messages.c.body)
            .where(messages.c.topic == self.topic, messages.c.seq > self.position)
            .order_by(messages.c.seq)
            .limit(limit)
        )
        return [(row.seq, row.body) for row in result]

    async def advance(self, position: int, at: int) -> None:
        await self._conn.execute(
            update(consumer_groups)
            .where(consumer_groups.c.topic == self.topic, consumer_groups.c.name == self.name)
            .values(position=position, last_consumed_at=at)
        )
        self.position = position
        self.advanced = True


class LeaderLock:
    """Held through a dedicated connection: if the process dies, the database frees it."""

    def __init__(self, store: Store, name: str) -> None:
        self._store = store
        self._key = dialects.lock_key(name)
        self._conn: AsyncConnection | None = None

    async def acquire(self) -> bool:
        """Try to take the lock without waiting; True when this process holds it."""
        if not self._store.shared:
            return True  # one process owns a SQLite store
        if self._conn is not None:
            try:
                await dialects.check_lock_connection(self._conn)
                return True
            except SQLAlchemyError:
                log.warning("lost the connection that held the %s lock", self._key)
                await self.release()
        try:
            conn = await self._store._writer.connect()
        except SQLAlchemyError:
            return False
        try:
            held = await dialects.try_lock(conn, self._key)
        except SQLAlchemyError:
            held = False
        if held:
            self._conn = conn
        else:
            await conn.close()
        return held

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(SQLAlchemyError):
                await dialects.unlock(conn, self._key)
            with contextlib.suppress(SQLAlchemyError):
                await conn.close()


class WriteTx:
    """The statements of one write transaction."""

    def __init__(self, conn: AsyncConnection, dialect: str) -> None:
        self.conn = conn
        self.dialect = dialect

    async def next_revision(self) -> int:
        """Take the next store revision. The row stays locked until commit, so revisions
        become visible in order and no reader can skip one.
        """
        result = await self.conn.execute(
            update(store_revision)
            .where(store_revision.c.id == 1)
            .values(revision=store_revision.c.revision + 1)
            .returning(store_revision.c.revision)
        )
        revision = int(result.scalar_one())
        await dialects.notify(self.conn, REVISION_CHANNEL, [str(revision)])
        return revision

    async def advance_revision(self, revision: int) -> None:
        """Move the revision taken by :meth:`next_revision` on to ``revision``: a transaction
        that commits several changes gives each its own revision, in order.
        """
        await self.conn.execute(
            update(store_revision).where(store_revision.c.id == 1).values(revision=revision)
        )
        await dialects.notify(self.conn, REVISION_CHANNEL, [str(revision)])

    async def put_policies(self, rows: Sequence[PolicyRow]) -> None:
        if rows:
            await self.conn.execute(
                dialects.upsert(
                    self.dialect,
                    policies,
                    keys=("policy_id",),
                    update=(
                        "policy_version",
                        "policy_type",
                        "policy_type_version",
                        "body",
                        "revision",
                        "deployed_at",
                    ),
                ),
                [_asdict(row) for row in rows],
            )

    async def delete_policies(self, policy_ids: Iterable[str]) -> None:
        ids = list(policy_ids)
        if ids:
            await self.conn.execute(delete(policies).where(policies.c.policy_id.in_(ids)))

    async def put_subscription(self, row: SubscriptionRow) -> None:
        """Insert or update a subscription. A new one gets its mark (what was last published
        to it) from ``row``; an existing one keeps its mark (see :meth:`mark_published`).
        """
        await self.conn.execute(
            dialects.upsert(
                self.dialect,
                subscriptions,
                keys=("subscriber_id",),
                update=("topic", "body", "revision", "updated_at"),
            ),
            [{name: getattr(row, name) for name in SUBSCRIPTION_COLUMNS}],
        )
        await self.conn.execute(
            dialects.insert_ignore(self.dialect, subscription_marks),
            [
                {
                    "subscriber_id": row.subscriber_id,
                    "last_revision": row.last_revision,
                    "last_published_at": row.last_published_at,
                }
            ],
        )

    async def delete_subscription(self, subscriber_id: str) -> None:
        """Delete a subscription and its mark."""
        await self.conn.execute(
            delete(subscriptions).where(subscriptions.c.subscriber_id == subscriber_id)
        )
        await self.conn.execute(
            delete(subscription_marks).where(subscription_marks.c.subscriber_id == subscriber_id)
        )

    async def create_topics(self, names: Iterable[str], at: int) -> None:
        """Create those of the topics that do not exist yet (a replica creating the same topic
        at the same moment is no error).
        """
        wanted = sorted(set(names))
        if not wanted:
            return
        found = await self.conn.execute(
            select(topics.c.name).where(dialects.among(self.dialect, topics.c.name, wanted))
        )
        existing = {name for (name,) in found}
        missing = [
            {"name": name, "last_offset": 0, "created_at": at, "last_published_at": None}
            for name in wanted
            if name not in existing
        ]
        if missing:
            await self.conn.execute(dialects.insert_ignore(self.dialect, topics), missing)

    async def mark_published(self, subscriber_ids: Iterable[str], revision: int, at: int) -> None:
        """Record that a snapshot of ``revision`` was published at ``at`` to each of the
        subscribers; ids with no subscription are left out.
        """
        ids = list(subscriber_ids)
        if not ids:
            return
        result = await self.conn.execute(
            update(subscription_marks)
            .where(dialects.among(self.dialect, subscription_marks.c.subscriber_id, ids))
            .values(last_revision=revision, last_published_at=at)
        )
        if (result.rowcount or 0) < len(ids):
            # A subscription written without its mark (put_subscription writes one with every
            # subscription): give it one now.
            await self.conn.execute(
                dialects.insert_ignore(self.dialect, subscription_marks).from_select(
                    ["subscriber_id", "last_revision", "last_published_at"],
                    select(
                        subscriptions.c.subscriber_id,
                        literal(revision, BigInteger),
                        literal(at, BigInteger),
                    ).where(dialects.among(self.dialect, subscriptions.c.subscriber_id, ids)),
                )
            )

    async def outbox_add(self, batch: Sequence[OutMessage], at: int) -> None:
        """Queue messages for the relay, in order."""
        await dialects.bulk_insert(
            self.conn,
            outbox,
            OUTBOX_COLUMNS,
            [(m.topic, m.key, m.revision, m.dedup_id, m.body, at) for m in batch],
        )

    async def append(self, batch: Sequence[OutMessage], at: int) -> dict[str, int]:
        """Append messages to their topics (created as needed), in order; returns each topic's
        new last offset. Advancing a topic's offset locks its row until commit, so offsets
        become visible in order.
        """
        by_topic: dict[str, list[OutMessage]] = defaultdict(list)
        for message in batch:
            by_topic[message.topic].append(message)
        if not by_topic:
            return {}
        names = sorted(by_topic)
        counts = {name: len(by_topic[name]) for name in names}
        advanced = await dialects.advance_topics(self.conn, counts, at)
        heads = {name: advanced.get(name, counts[name]) for name in names}
        await dialects.bulk_insert(
            self.conn,
            topics,
            TOPIC_COLUMNS,
            [(name, last, at, at) for name, last in heads.items() if name not in advanced],
        )
        rows: list[tuple[str, int, str | None, int | None, str, int]] = []
        for name, last in heads.items():
            items = by_topic[name]
            rows.extend(
                (name, seq, m.key, m.revision, m.body, at)
                for seq, m in enumerate(items, last - len(items) + 1)
            )
        await dialects.bulk_insert(self.conn, messages, MESSAGE_COLUMNS, rows)
        await dialects.notify(
            self.conn, TOPICS_CHANNEL, [f"{name}:{last}" for name, last in heads.items()]
        )
        return heads


async def load_all(conn: AsyncConnection) -> Snapshot:
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


def _asdict(row: Any) -> dict[str, Any]:
    return {name: getattr(row, name) for name in row.__slots__}


def _upgrade(connection: Connection) -> None:
    # Alembic logs each plugin it loads at INFO; only its migration lines are worth keeping.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    dialects.lock_for_migrations(connection)
    command.upgrade(config, "head")
