"""Leader locks: at most one process of a shared store holds each, on a connection of its
own, so the database frees it when the holder dies. The outbox relay and the background jobs
(:mod:`policy_pubsub.background`) run where their lock is held.

A holder that is frozen rather than dead (SIGSTOP, a paused VM, a hung process) keeps its
connection open, since its kernel still answers TCP. So the lock's session is one PostgreSQL
(14+) ends once it stays idle for ``store.timeouts.leader_lock`` seconds; while the lock is
held, its holder checks the connection four times as often, so a live holder never lets it go
idle that long. A frozen holder's session is ended, another replica takes the lock, and the
holder, once it resumes, finds its connection gone at its next check and no longer leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from policy_pubsub.store import dialects
from policy_pubsub.tasks import cancelled

if TYPE_CHECKING:
    from policy_pubsub.store.database import Store

log = logging.getLogger(__name__)

#: The share of the idle-session timeout between two checks of a held lock's connection.
CHECKS_PER_TIMEOUT = 4


@asynccontextmanager
async def leadership(store: Store, name: str) -> AsyncIterator[LeaderLock]:
    """The lock ``name`` of ``store``, given up on the way out."""
    lock = LeaderLock(store, name)
    try:
        yield lock
    finally:
        await lock.release()


class LeaderLock:
    """Held through a dedicated connection: if the process dies, the database frees it; if
    it is frozen, PostgreSQL 14+ ends the connection's session once idle (see the module).
    """

    def __init__(self, store: Store, name: str) -> None:
        self._store = store
        self.name = name
        self._key = dialects.lock_key(name)
        self._conn: AsyncConnection | None = None
        self._using = asyncio.Lock()  # one statement at a time on the connection
        self._keeping: asyncio.Task[None] | None = None

    @property
    def _timeout(self) -> float:
        """The lock session's idle timeout; 0 when the server does not end idle sessions."""
        return self._store.timeouts.leader_lock if self._store.ends_idle_sessions else 0.0

    async def acquire(self) -> bool:
        """Try to take the lock without waiting; True when this process holds it."""
        if not self._store.shared:
            return True  # one process owns a SQLite store
        async with self._using:
            if self._conn is not None and await self._check():
                return True
            try:
                conn = await self._store.connect()
            except SQLAlchemyError:
                return False
            try:
                held = await dialects.try_lock(conn, self._key)
            except SQLAlchemyError:
                await _discard(conn)
                return False
            if not held:
                # Untouched: back to the pool, for the next try (every few seconds).
                with contextlib.suppress(SQLAlchemyError):
                    await conn.close()
                return False
            try:
                if self._timeout:
                    await dialects.end_when_idle(conn, self._timeout)
            except SQLAlchemyError:
                await _discard(conn)  # its session ends, and the lock with it
                return False
            self._conn = conn
            if self._timeout:
                self._keeping = asyncio.create_task(
                    self._keep(self._timeout / CHECKS_PER_TIMEOUT),
                    name=f"policy-pubsub {self.name} lock check",
                )
            return True

    async def release(self) -> None:
        """Give the lock up; nothing happens when this process does not hold it."""
        await self._let_go(unlock=True)

    async def _let_go(self, *, unlock: bool) -> None:
        keeping, self._keeping = self._keeping, None
        if keeping is not asyncio.current_task():
            await cancelled(keeping)
        conn, self._conn = self._conn, None
        if conn is not None:
            if unlock:
                with contextlib.suppress(SQLAlchemyError):
                    await dialects.unlock(conn, self._key)
            await _discard(conn)

    async def _keep(self, every: float) -> None:
        """Check the held lock's connection every ``every`` seconds, so that its session is
        never idle long enough for PostgreSQL to end it while this process runs.
        """
        while True:
            await asyncio.sleep(every)
            async with self._using:
                if self._conn is None or not await self._check():
                    return

    async def _check(self) -> bool:
        """Whether the held lock's connection still answers; if not, the lock is lost (its
        session ended, or will have by the time it answers): say so once, and let it go.
        Called holding ``_using``.
        """
        if self._conn is None:
            return False
        timeout = self._timeout or None
        try:
            await dialects.check_lock_connection(self._conn, timeout)
            return True
        except (SQLAlchemyError, TimeoutError) as exc:
            why = "does not answer" if isinstance(exc, TimeoutError) else "is gone"
        log.warning(
            "lost the %s lock: its connection to the store %s (this replica was frozen or cut "
            "off from the store); another replica may lead now",
            self.name,
            why,
        )
        await self._let_go(unlock=False)  # its session is gone, or as good as gone
        return False


async def _discard(conn: AsyncConnection) -> None:
    """Close a lock connection for good, not back into the pool: its session may hold the
    lock, and carries the lock's idle timeout.
    """
    with contextlib.suppress(SQLAlchemyError):
        await conn.invalidate()
    with contextlib.suppress(SQLAlchemyError):
        await conn.close()


__all__ = ["LeaderLock", "leadership"]
