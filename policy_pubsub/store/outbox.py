"""The outbox: messages written with the change that causes them, waiting for the relay to
hand them to a router outside the store, and the lock that makes one process the relay.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from policy_pubsub.routers.messages import OutMessage
from policy_pubsub.store import dialects
from policy_pubsub.store.tables import outbox

if TYPE_CHECKING:
    from policy_pubsub.store.database import Store

log = logging.getLogger(__name__)


class OutboxRepository:
    """Messages waiting for the relay (``store.outbox``); they are written through
    :meth:`~policy_pubsub.store.database.WriteTx.outbox_add`.
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    async def batch(self, limit: int, after: int = 0) -> list[tuple[int, OutMessage]]:
        """The oldest messages waiting in the outbox with an id above ``after``, in the order
        they were written (the relay reads its next batch while the one before is published).
        """
        async with self._store.read() as conn:
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

    async def delete(self, ids: Sequence[int]) -> None:
        """Remove the messages with these ids (the router acknowledged them)."""
        if ids:
            async with self._store.write() as tx:
                await tx.conn.execute(delete(outbox).where(outbox.c.id.in_(list(ids))))

    async def stats(self) -> tuple[int, int | None]:
        """How many messages wait in the outbox, and when the oldest was written."""
        async with self._store.read() as conn:
            row = (await conn.execute(select(func.count(), func.min(outbox.c.created_at)))).one()
            return int(row[0]), None if row[1] is None else int(row[1])

    @asynccontextmanager
    async def leadership(self, name: str) -> AsyncIterator[LeaderLock]:
        """A lock that at most one process holds at a time, kept on its own connection."""
        lock = LeaderLock(self._store, name)
        try:
            yield lock
        finally:
            await lock.release()


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
            conn = await self._store.connect()
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
        """Give the lock up; nothing happens when this process does not hold it."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(SQLAlchemyError):
                await dialects.unlock(conn, self._key)
            with contextlib.suppress(SQLAlchemyError):
                await conn.close()


__all__ = ["LeaderLock", "OutboxRepository"]
