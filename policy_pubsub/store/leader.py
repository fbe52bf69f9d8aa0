"""Leader locks: at most one process of a shared store holds each, on a connection of its
own, so the database frees it when the holder dies. The outbox relay and the background jobs
(:mod:`policy_pubsub.background`) run where their lock is held.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from policy_pubsub.store import dialects

if TYPE_CHECKING:
    from policy_pubsub.store.database import Store

log = logging.getLogger(__name__)


@asynccontextmanager
async def leadership(store: Store, name: str) -> AsyncIterator[LeaderLock]:
    """The lock ``name`` of ``store``, given up on the way out."""
    lock = LeaderLock(store, name)
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


__all__ = ["LeaderLock", "leadership"]
