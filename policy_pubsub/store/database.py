"""The SQL store: the one source of truth for policies, subscriptions and embedded topics.

:class:`Store` holds the engines, the transactions and the life cycle; what the store holds is
read through one repository each: ``store.state`` (policies, subscriptions, the revision),
``store.topics`` (the embedded topic log), ``store.positions`` (consumer positions),
``store.outbox`` (messages for the relay, with its leader lock), ``store.dead_letters``
(messages the router refused for good) and ``store.signatures`` (the PAP webhook's replay
cache). Every write of a change goes through one :class:`WriteTx`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    BigInteger,
    Connection,
    Delete,
    Insert,
    Update,
    bindparam,
    delete,
    exists,
    literal,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from policy_pubsub.exceptions import StoreUnavailable
from policy_pubsub.routers.messages import OutMessage
from policy_pubsub.store import dialects
from policy_pubsub.store.dead_letters import DeadLetterRepository, remove_for
from policy_pubsub.store.notify import REVISION_CHANNEL, TOPICS_CHANNEL, Notifications
from policy_pubsub.store.outbox import OutboxRepository
from policy_pubsub.store.positions import PositionRepository
from policy_pubsub.store.rows import PolicyRow, SubscriptionRow
from policy_pubsub.store.signatures import SignatureRepository
from policy_pubsub.store.state import POLICY, SUBSCRIPTION, SUBSCRIPTION_COLUMNS, StateRepository
from policy_pubsub.store.tables import (
    change_log,
    consumer_groups,
    messages,
    outbox,
    policies,
    store_revision,
    subscription_marks,
    subscriptions,
    topics,
)
from policy_pubsub.store.topics import TopicRepository

MIGRATIONS = Path(__file__).parent / "migrations"
MESSAGE_COLUMNS = ("topic", "seq", "key", "revision", "body", "created_at")
TOPIC_COLUMNS = ("name", "last_offset", "created_at", "last_published_at")
OUTBOX_COLUMNS = ("topic", "key", "revision", "dedup_id", "body", "created_at")


def now_ms() -> int:
    return int(time.time() * 1000)


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
        self.state = StateRepository(self)
        self.topics = TopicRepository(self)
        self.positions = PositionRepository(self)
        self.outbox = OutboxRepository(self)
        self.dead_letters = DeadLetterRepository(self)
        self.signatures = SignatureRepository(self)

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
    async def read(self, *, consistent: bool = False) -> AsyncIterator[AsyncConnection]:
        """One read transaction. ``consistent``: every statement in it sees the database as
        of one moment (REPEATABLE READ on PostgreSQL; a SQLite transaction always does).
        """
        try:
            async with self._reader.connect() as conn:
                if consistent and self.shared:
                    conn = await conn.execution_options(isolation_level="REPEATABLE READ")
                async with conn.begin():
                    yield conn
        except (SQLAlchemyError, OSError) as exc:
            raise StoreUnavailable(f"store read failed: {exc}") from exc

    @asynccontextmanager
    async def file_statements(self) -> AsyncIterator[FileStatements]:
        """SQLite only: statements that cannot run inside a transaction (a WAL checkpoint,
        VACUUM), on the writer's connection, holding the write lock.
        """
        if self.dialect != "sqlite":
            raise ValueError("file statements are SQLite's")
        async with self._write_lock or contextlib.nullcontext():
            try:
                async with self._writer.connect() as conn:
                    raw = await conn.get_raw_connection()
                    yield FileStatements(raw.driver_connection)
            except (SQLAlchemyError, OSError) as exc:
                raise StoreUnavailable(f"store write failed: {exc}") from exc

    def connect(self) -> AsyncConnection:
        """A connection of its own to the writing engine, for a lock held across statements
        (``async with`` it, or await it and close it); errors are the driver's.
        """
        return self._writer.connect()

    async def ping(self) -> None:
        """Return when the database answers; raise ``StoreUnavailable`` otherwise."""
        async with self.read() as conn:
            await conn.execute(select(store_revision.c.revision))


class FileStatements:
    """Statements on SQLite's writer connection outside any transaction (the connection is
    in autocommit: see ``dialects``).
    """

    def __init__(self, driver: Any) -> None:
        self._driver = driver  # aiosqlite's connection

    async def rows(self, sql: str) -> list[Any]:
        """Run a statement that answers with rows; its rows."""
        try:
            cursor = await self._driver.execute(sql)
            return list(await cursor.fetchall())
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{sql} failed: {exc}") from exc

    async def run(self, sql: str) -> None:
        """Run a statement to its end. (The sqlite3 module steps a statement that answers
        with no columns only once, and ``PRAGMA incremental_vacuum`` frees one page a step.)
        """
        try:
            await self._driver.executescript(sql)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{sql} failed: {exc}") from exc


class _Statements:
    """The statements every policy change executes, built once per dialect: SQLAlchemy then
    finds each one's compiled form by the key it keeps, rather than building the statement
    and working out its key again at every commit (which costs more than executing it).
    """

    def __init__(self, dialect: str) -> None:
        where_one = store_revision.c.id == 1
        self.next_revision: Update = (
            update(store_revision)
            .where(where_one)
            .values(revision=store_revision.c.revision + 1)
            .returning(store_revision.c.revision)
        )
        self.advance_revision: Update = (
            update(store_revision).where(where_one).values(revision=bindparam("revision"))
        )
        self.put_policies: Insert = dialects.upsert(
            dialect,
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
        )
        self.log: Insert = dialects.insert_ignore(dialect, change_log)
        self.mark_published: Update = (
            update(subscription_marks)
            .where(dialects.among_param(dialect, subscription_marks.c.subscriber_id, "ids"))
            .values(last_revision=bindparam("revision"), last_published_at=bindparam("at"))
        )
        self.delete_policies: Delete = delete(policies).where(
            dialects.among_param(dialect, policies.c.policy_id, "ids")
        )


@functools.cache
def _statements(dialect: str) -> _Statements:
    return _Statements(dialect)


class WriteTx:
    """The statements of one write transaction."""

    def __init__(self, conn: AsyncConnection, dialect: str) -> None:
        self.conn = conn
        self.dialect = dialect
        self._statements = _statements(dialect)

    async def next_revision(self) -> int:
        """Take the next store revision. The row stays locked until commit, so revisions
        become visible in order and no reader can skip one.
        """
        result = await self.conn.execute(self._statements.next_revision)
        revision = int(result.scalar_one())
        await dialects.notify(self.conn, REVISION_CHANNEL, [str(revision)])
        return revision

    async def rollback(self) -> None:
        """End the transaction here, writing nothing; the block then ends without a commit."""
        await self.conn.rollback()

    async def advance_revision(self, revision: int) -> None:
        """Move the revision taken by :meth:`next_revision` on to ``revision``: a transaction
        that commits several changes gives each its own revision, in order.
        """
        await self.conn.execute(self._statements.advance_revision, {"revision": revision})
        await dialects.notify(self.conn, REVISION_CHANNEL, [str(revision)])

    async def put_policies(self, rows: Sequence[PolicyRow]) -> None:
        if rows:
            await self.conn.execute(self._statements.put_policies, [_asdict(row) for row in rows])
            await self._log(
                POLICY, [(row.policy_id, row.revision) for row in rows], rows[0].deployed_at
            )

    async def delete_policies(self, deleted: Mapping[str, int], at: int) -> None:
        """Delete policies: policy id -> the revision that undeployed it."""
        if deleted:
            await self.conn.execute(
                self._statements.delete_policies,
                {"ids": dialects.among_value(self.dialect, list(deleted))},
            )
            await self._log(POLICY, list(deleted.items()), at)

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
        await self._log(SUBSCRIPTION, [(row.subscriber_id, row.revision)], row.updated_at)
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

    async def subscribe(self, rows: Sequence[SubscriptionRow]) -> None:
        """Insert or update subscriptions (at most one row per subscriber), each with its
        mark as its row says: a subscribe publishes the subscriber's starting snapshot.
        """
        if not rows:
            return
        await self.conn.execute(
            dialects.upsert(
                self.dialect,
                subscriptions,
                keys=("subscriber_id",),
                update=("topic", "body", "revision", "updated_at"),
            ),
            [{name: getattr(row, name) for name in SUBSCRIPTION_COLUMNS} for row in rows],
        )
        await self.conn.execute(
            dialects.upsert(
                self.dialect,
                subscription_marks,
                keys=("subscriber_id",),
                update=("last_revision", "last_published_at"),
            ),
            [
                {
                    "subscriber_id": row.subscriber_id,
                    "last_revision": row.last_revision,
                    "last_published_at": row.last_published_at,
                }
                for row in rows
            ],
        )
        for at in sorted({row.updated_at for row in rows}):
            await self._log(
                SUBSCRIPTION,
                [(row.subscriber_id, row.revision) for row in rows if row.updated_at == at],
                at,
            )

    async def delete_subscription(self, subscriber_id: str, revision: int, at: int) -> None:
        """Delete a subscription and its mark, at ``revision``."""
        await self.delete_subscriptions({subscriber_id: revision}, at)

    async def delete_subscriptions(self, deleted: Mapping[str, int], at: int) -> None:
        """Delete subscriptions and their marks: subscriber id -> the revision deleting it."""
        if not deleted:
            return
        ids = list(deleted)
        await self.conn.execute(
            delete(subscriptions).where(
                dialects.among(self.dialect, subscriptions.c.subscriber_id, ids)
            )
        )
        await self.conn.execute(
            delete(subscription_marks).where(
                dialects.among(self.dialect, subscription_marks.c.subscriber_id, ids)
            )
        )
        await self._log(SUBSCRIPTION, list(deleted.items()), at)

    async def _log(self, kind: str, keys: Sequence[tuple[str, int]], at: int) -> None:
        """Log that these keys (with the revision of each) were written or deleted."""
        await self.conn.execute(
            self._statements.log,
            [
                {"revision": revision, "kind": kind, "key": key, "created_at": at}
                for key, revision in keys
            ],
        )

    async def drop_subscriber_messages(self, subscriber_id: str, topic: str) -> None:
        """After a subscription left ``topic`` (unsubscribed, expired, or moved to another
        topic): drop its snapshots there, and when no subscription uses the topic any more,
        every message and consumer group of the topic. The topic row stays: it holds the
        topic's last offset, so offsets are never reused while a reader may still hold one.
        Call it after the subscription's row was deleted or moved, in the same transaction.
        """
        await self.conn.execute(
            delete(messages).where(messages.c.topic == topic, messages.c.key == subscriber_id)
        )
        unused = ~exists().where(subscriptions.c.topic == topic)
        await self.conn.execute(delete(messages).where(messages.c.topic == topic, unused))
        await self.conn.execute(
            delete(consumer_groups).where(consumer_groups.c.topic == topic, unused)
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
            self._statements.mark_published,
            {"ids": dialects.among_value(self.dialect, ids), "revision": revision, "at": at},
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

    async def remove_dead_letters(self, subscriber_ids: Iterable[str]) -> int:
        """Delete every dead letter of these subscribers; how many went."""
        return await remove_for(self.conn, self.dialect, subscriber_ids)

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
