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
import os
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
    text,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from policy_pubsub.exceptions import StoreUnavailable
from policy_pubsub.routers.messages import OutMessage
from policy_pubsub.slices import Slices
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
    mark_log,
    messages,
    outbox,
    policies,
    snapshot_bodies,
    store_revision,
    subscription_marks,
    subscriptions,
    topics,
)
from policy_pubsub.store.topics import TopicRepository, drop_unused_bodies

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
#: SQLite: at most one background WAL checkpoint started within this many seconds, so a WAL
#: that a reader keeps from being reset does not cost a checkpoint per commit.
WAL_CHECKPOINT_SPACING = 0.2
MESSAGE_COLUMNS = ("topic", "seq", "key", "revision", "body", "created_at", "part")
SNAPSHOT_BODY_COLUMNS = ("revision", "part", "body", "created_at")
OUTBOX_COLUMNS = ("topic", "key", "revision", "dedup_id", "body", "created_at")


def now_ms() -> int:
    return int(time.time() * 1000)


class Store:
    """SQLAlchemy Core over SQLite (aiosqlite) or PostgreSQL (asyncpg)."""

    def __init__(self, url: str, timeouts: dialects.SessionTimeouts | None = None) -> None:
        self.url = url
        #: How long PostgreSQL lets this server's sessions stay idle (see SessionTimeouts).
        self.timeouts = timeouts or dialects.SessionTimeouts()
        self._reader, self._writer = dialects.create_engines(url, self.timeouts)
        self.dialect = self._writer.dialect.name
        #: Several processes share the store (PostgreSQL): in-process state is only a cache.
        self.shared = self.dialect == "postgresql"
        # SQLite has one writer connection; the database itself serialises PostgreSQL writers.
        self._write_lock = None if self.shared else asyncio.Lock()
        self.notifications = Notifications(url) if self.shared else None
        #: PostgreSQL 14+: the server ends a leader lock's session left idle (frozen holder);
        #: known once the store is open.
        self.ends_idle_sessions = False
        # SQLite: the WAL file, and the background checkpoint that keeps it in bounds.
        database = self._writer.url.database
        self._wal = f"{database}-wal" if self.dialect == "sqlite" and database else None
        self._checkpointing: asyncio.Task[None] | None = None
        self._checkpoint_started = 0.0
        #: How many background WAL checkpoints ran to the end (SQLite).
        self.wal_checkpoints = 0
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
                if self.shared:
                    self.ends_idle_sessions = await dialects.ends_idle_sessions(conn)
        except (SQLAlchemyError, OSError) as exc:
            raise StoreUnavailable(f"cannot open the store: {exc}") from exc
        if self.shared and not self.ends_idle_sessions and self.timeouts.leader_lock:
            log.warning(
                "PostgreSQL before 14 does not end idle sessions: a replica frozen while it "
                "leads (the outbox relay, the background jobs) keeps its leader locks until "
                "it resumes or its connection dies; the other replicas wait meanwhile"
            )
        if self.notifications is not None:
            self.notifications.start()

    async def close(self) -> None:
        if self._checkpointing is not None:
            await asyncio.wait([self._checkpointing])
            self._checkpointing = None
        if self.notifications is not None:
            await self.notifications.close()
        await self.state.close()
        await self._reader.dispose()
        if self._writer is not self._reader:
            await self._writer.dispose()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[WriteTx]:
        """One write transaction; committed when the block ends without an exception.

        Writers within this process take turns; the database serialises them across processes.
        The notifications the transaction's statements queued are sent by one statement just
        before the commit (PostgreSQL delivers them only at the commit anyway).
        """
        async with self._write_lock or contextlib.nullcontext():
            try:
                async with self._writer.begin() as conn:
                    tx = WriteTx(conn, self.dialect)
                    yield tx
                    await tx.send_notifications()
            except (SQLAlchemyError, OSError) as exc:
                raise StoreUnavailable(f"store write failed: {exc}") from exc
        if self._wal is not None:
            self._maybe_checkpoint(self._wal)

    def _maybe_checkpoint(self, wal: str) -> None:
        """SQLite, after a commit: start a checkpoint in the background if the WAL outgrew
        ``WAL_CHECKPOINT_BYTES``. Commits never checkpoint themselves (``wal_autocheckpoint``
        is off): a checkpoint copies the WAL into the database file and syncs it, which
        took a commit of 10,000 snapshots from ~10 to ~55 ms.
        """
        if self._checkpointing is not None and not self._checkpointing.done():
            return
        try:
            size = os.stat(wal).st_size
        except OSError:
            return
        started = time.monotonic()
        if (
            size <= dialects.WAL_CHECKPOINT_BYTES
            or started - self._checkpoint_started < WAL_CHECKPOINT_SPACING
        ):
            return
        self._checkpoint_started = started
        self._checkpointing = asyncio.get_running_loop().create_task(
            self._checkpoint_wal(), name="policy-pubsub WAL checkpoint"
        )

    async def settle_wal(self) -> None:
        """SQLite, before each transaction of a long run of deletes: checkpoint the WAL and
        wait for it, so that the next write can start the WAL over instead of growing it
        (unless a reader still uses the part of the WAL it would overwrite). A background
        checkpoint under way is waited for; otherwise one starts if the WAL holds anything.
        Nothing on PostgreSQL.
        """
        if self._wal is None:
            return
        running = self._checkpointing
        if running is None or running.done():
            try:
                if os.stat(self._wal).st_size == 0:
                    return
            except OSError:
                return
            self._checkpoint_started = time.monotonic()
            running = self._checkpointing = asyncio.get_running_loop().create_task(
                self._checkpoint_wal(), name="policy-pubsub WAL checkpoint"
            )
        await asyncio.wait([running])

    async def _checkpoint_wal(self) -> None:
        """Copy what the WAL holds into the database file, on a reading connection: a
        PASSIVE checkpoint waits for no reader and no writer, and holds no write lock, so
        commits go on meanwhile. The next write starts the WAL over once all of it is
        copied (and cuts the file back to ``WAL_CHECKPOINT_BYTES``). Commits that landed
        while it copied leave it short of all: their frames (a few) are then copied holding
        the write lock, so that none lands meanwhile. Without that step, under commits
        closer together than a checkpoint takes, the WAL was never copied in full and grew
        by every commit until the file upkeep truncated it (6 MB a second, up to 28 MB,
        under the pushes of bench 9).
        """
        try:
            async with self._reader.connect() as conn:
                raw = await conn.get_raw_connection()
                sql = FileStatements(raw.driver_connection)
                await sql.rows("PRAGMA wal_checkpoint(PASSIVE)")
                async with self._write_lock or contextlib.nullcontext():
                    await sql.rows("PRAGMA wal_checkpoint(PASSIVE)")
            self.wal_checkpoints += 1
        except (SQLAlchemyError, OSError, StoreUnavailable) as exc:
            # The file upkeep's checkpoint, every few seconds, does what this one could not.
            log.debug("background WAL checkpoint failed: %s", exc)

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
        # A background checkpoint still running would make this one's find the WAL busy. It
        # may need the write lock to finish, so it is waited for without the lock; none
        # starts while the lock is held (only a commit starts one, after its commit).
        lock = self._write_lock
        assert lock is not None
        while True:
            running = self._checkpointing
            if running is not None:
                await asyncio.wait([running])
            await lock.acquire()
            if self._checkpointing is None or self._checkpointing.done():
                break
            lock.release()
        try:
            async with self._writer.connect() as conn:
                raw = await conn.get_raw_connection()
                yield FileStatements(raw.driver_connection)
        except (SQLAlchemyError, OSError) as exc:
            raise StoreUnavailable(f"store write failed: {exc}") from exc
        finally:
            lock.release()

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
            .values(revision=store_revision.c.revision + bindparam("count", type_=BigInteger))
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
        self._revision: int | None = None  # the revision to notify, once it commits
        self._notes: list[tuple[str, str]] = []  # other notifications, in order
        self._ended = False
        self._statements = _statements(dialect)
        # The change log and the mark log are for replicas that share the store. A SQLite
        # store has one process, which holds every change in memory already: it keeps neither
        # (another process that moved the file on is caught up with by reading it all, see
        # ``changes_since``).
        self._logging = dialect == "postgresql"

    async def next_revision(self, count: int = 1) -> int:
        """Take the next ``count`` store revisions; returns the first. The row stays locked
        until commit, so revisions become visible in order and no reader can skip one.
        """
        result = await self.conn.execute(self._statements.next_revision, {"count": count})
        last = int(result.scalar_one())
        self._revision = last
        return last - count + 1

    async def rollback(self) -> None:
        """End the transaction here, writing nothing; the block then ends without a commit."""
        self._ended = True
        await self.conn.rollback()

    async def advance_revision(self, revision: int) -> None:
        """Set the store's revision, taken by :meth:`next_revision`, to ``revision``: a
        transaction that commits several changes gives each its own revision, in order (and
        one that took more revisions than its changes needed hands back the rest).
        """
        if revision == self._revision:
            return
        await self.conn.execute(self._statements.advance_revision, {"revision": revision})
        self._revision = revision

    def notify(self, channel: str, payloads: Iterable[str]) -> None:
        """Queue notifications, sent just before the commit."""
        self._notes.extend((channel, payload) for payload in payloads)

    async def send_notifications(self) -> None:
        """Send what the transaction queued to notify (the revision it moved the store to
        first), unless it was rolled back.
        """
        if self._ended:
            return
        notes = self._notes
        if self._revision is not None:
            notes = [(REVISION_CHANNEL, str(self._revision)), *notes]
        await dialects.notify_all(self.conn, notes)

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
        mark and its creation time as its row says: a subscribe publishes the subscriber's
        starting snapshot, and a subscription unsubscribed and subscribed again in one batch
        is a new one (its row is updated, never deleted, as the batch's last word is the
        subscribe).
        """
        if not rows:
            return
        if self.dialect == "postgresql":
            # The subscriptions, their marks and the change log in one statement.
            await self.conn.execute(
                _SUBSCRIBE_PG,
                {
                    "ids": [row.subscriber_id for row in rows],
                    "topics": [row.topic for row in rows],
                    "bodies": [row.body for row in rows],
                    "revisions": [row.revision for row in rows],
                    "created": [row.created_at for row in rows],
                    "updated": [row.updated_at for row in rows],
                    "last": [row.last_revision for row in rows],
                    "published": [row.last_published_at for row in rows],
                    "kind": SUBSCRIPTION,
                },
            )
            return
        await self.conn.execute(
            dialects.upsert(
                self.dialect,
                subscriptions,
                keys=("subscriber_id",),
                update=("topic", "body", "revision", "created_at", "updated_at"),
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
        if not self._logging:
            return
        await self.conn.execute(
            self._statements.log,
            [
                {"revision": revision, "kind": kind, "key": key, "created_at": at}
                for key, revision in keys
            ],
        )

    async def drop_subscriber_messages(self, subscriber_id: str, topic: str, at: int) -> bool:
        """After a subscription left ``topic`` (unsubscribed, expired, or moved to another
        topic): drop its snapshots there, and when no subscription uses the topic any more,
        every message and consumer group of the topic, and mark the topic emptied at ``at``;
        returns True in that case. The topic row stays until maintenance drops it
        (``TopicRepository.drop_orphans``), which raises the store's offset floor above its
        last offset, so offsets are never reused while a reader may still hold one. Call it
        after the subscription's row was deleted or moved, in the same transaction.
        """
        dropped = await self.conn.execute(
            delete(messages)
            .where(messages.c.topic == topic, messages.c.key == subscriber_id)
            .returning(messages.c.revision, messages.c.part)
        )
        parts = [(r, p) for r, p in dropped if p is not None]
        used = (
            await self.conn.execute(select(exists().where(subscriptions.c.topic == topic)))
        ).scalar_one()
        if not used:
            dropped = await self.conn.execute(
                delete(messages)
                .where(messages.c.topic == topic)
                .returning(messages.c.revision, messages.c.part)
            )
            parts.extend((r, p) for r, p in dropped if p is not None)
        await drop_unused_bodies(self.conn, parts)
        if used:
            return False
        await self.conn.execute(delete(consumer_groups).where(consumer_groups.c.topic == topic))
        # The floor's shared lock before the topic row's, as every writer of topic rows
        # takes them (see tables.TOPIC_OFFSET_FLOOR).
        await dialects.offset_floor(self.conn)
        await self.conn.execute(update(topics).where(topics.c.name == topic).values(emptied_at=at))
        return True

    async def create_topics(self, names: Iterable[str], at: int) -> None:
        """Create those of the topics that do not exist yet, empty, their offsets starting
        after the store's offset floor (see :func:`dialects.advance_topics`); a replica
        creating the same topic at the same moment is no error.
        """
        wanted = sorted(set(names))
        if not wanted:
            return
        # Locked first: a row found here is not dropped before this transaction ends.
        floor = await dialects.offset_floor(self.conn)
        found = await self.conn.execute(
            select(topics.c.name).where(dialects.among(self.dialect, topics.c.name, wanted))
        )
        existing = {name for (name,) in found}
        missing = [name for name in wanted if name not in existing]
        if not missing:
            return
        await self.conn.execute(
            dialects.insert_ignore(self.dialect, topics),
            [
                {
                    "name": name,
                    "last_offset": floor,
                    "base_offset": floor,
                    "created_at": at,
                    "last_published_at": None,
                }
                for name in missing
            ],
        )

    async def mark_published(self, subscriber_ids: Iterable[str], revision: int, at: int) -> None:
        """Record that a snapshot of ``revision`` was published at ``at`` to each of the
        subscribers; ids with no subscription are left out. At most once per revision: on a
        shared store the mark log keeps one row a revision.
        """
        ids = list(subscriber_ids)
        if not ids:
            return
        if self._logging:
            await self.conn.execute(
                mark_log.insert().values(
                    revision=revision, published_at=at, subscribers=",".join(ids)
                )
            )
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
        become visible in order. A snapshot's shared end (``OutMessage.shared``) is written
        once per revision and part, to ``snapshot_bodies``; its row keeps the rest. The rows
        are built in slices (:mod:`policy_pubsub.slices`: a push appends up to one snapshot
        per subscription).
        """
        slices = Slices()
        by_topic: dict[str, list[OutMessage]] = defaultdict(list)
        for message in batch:
            by_topic[message.topic].append(message)
        if not by_topic:
            return {}
        heads = await dialects.advance_topics(
            self.conn, {name: len(items) for name, items in by_topic.items()}, at
        )
        rows: list[tuple[str, int, str | None, int | None, str, int, int | None]] = []
        bodies: dict[tuple[int, int], str] = {}  # (revision, part) -> the shared end
        for name in sorted(heads):
            last = heads[name]
            items = by_topic[name]
            for seq, m in enumerate(items, last - len(items) + 1):
                shared = m.shared
                if shared is None or m.revision is None:
                    rows.append((name, seq, m.key, m.revision, m.body, at, None))
                    continue
                known = bodies.setdefault((m.revision, shared.part), shared.text)
                if known is not shared.text and known != shared.text:
                    raise ValueError(f"two shared ends for part {shared.part} of {m.revision}")
                head = m.body[: len(m.body) - len(shared.text)]
                rows.append((name, seq, m.key, m.revision, head, at, shared.part))
            if slices.due():
                await slices.pause()
        await dialects.bulk_insert(
            self.conn,
            snapshot_bodies,
            SNAPSHOT_BODY_COLUMNS,
            [(revision, part, text, at) for (revision, part), text in bodies.items()],
        )
        await dialects.bulk_insert(self.conn, messages, MESSAGE_COLUMNS, rows)
        self.notify(TOPICS_CHANNEL, (f"{name}:{last}" for name, last in heads.items()))
        return heads


_SUBSCRIBE_PG = text(
    "WITH written AS ("
    " INSERT INTO subscriptions AS s"
    " (subscriber_id, topic, body, revision, created_at, updated_at)"
    " SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:topics AS text[]),"
    " CAST(:bodies AS text[]), CAST(:revisions AS bigint[]), CAST(:created AS bigint[]),"
    " CAST(:updated AS bigint[]))"
    " ON CONFLICT (subscriber_id) DO UPDATE SET topic = excluded.topic, body = excluded.body,"
    " revision = excluded.revision, created_at = excluded.created_at,"
    " updated_at = excluded.updated_at"
    "), marked AS ("
    " INSERT INTO subscription_marks AS m (subscriber_id, last_revision, last_published_at)"
    " SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:last AS bigint[]),"
    " CAST(:published AS bigint[]))"
    " ON CONFLICT (subscriber_id) DO UPDATE SET last_revision = excluded.last_revision,"
    " last_published_at = excluded.last_published_at"
    ") INSERT INTO change_log (revision, kind, key, created_at)"
    " SELECT logged.revision, :kind, logged.key, logged.at FROM unnest(CAST(:revisions AS"
    " bigint[]), CAST(:ids AS text[]), CAST(:updated AS bigint[])) AS logged(revision, key, at)"
    " ON CONFLICT DO NOTHING"
)


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
