"""Consumer positions: where each consumer group of each topic stands."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from policy_pubsub.exceptions import StoreUnavailable
from policy_pubsub.store import dialects
from policy_pubsub.store.rows import GroupRow
from policy_pubsub.store.tables import consumer_groups
from policy_pubsub.store.topics import messages_after

#: Positions saved per statement: the statement's parameters are processed in the event loop's
#: thread (about 5 us a row), so a flush after a push to 10,000 groups is cut into statements
#: of this many rows, the loop running while each executes.
SAVE_CHUNK = 500

if TYPE_CHECKING:
    from policy_pubsub.store.database import Store


class PositionRepository:
    """Consumer groups' positions (``store.positions``); a position never moves back."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def all_groups(self) -> list[GroupRow]:
        """Every consumer group's position (a router loads them all when it starts)."""
        async with self._store.read() as conn:
            result = await conn.execute(select(consumer_groups))
            return [GroupRow(*row) for row in result]

    async def group(self, topic: str, name: str) -> GroupRow | None:
        """One group's position, or None if the group never consumed."""
        async with self._store.read() as conn:
            row = (
                await conn.execute(
                    select(consumer_groups).where(
                        consumer_groups.c.topic == topic, consumer_groups.c.name == name
                    )
                )
            ).first()
            return None if row is None else GroupRow(*row)

    async def save(self, rows: Sequence[GroupRow]) -> None:
        """Store the positions in one transaction (``SAVE_CHUNK`` rows per statement); a
        stored position higher than the one given is kept.
        """
        if not rows:
            return
        statement = dialects.upsert(
            self._store.dialect,
            consumer_groups,
            keys=("topic", "name"),
            update=("position", "last_consumed_at"),
            never_lower=("position",),
        )
        async with self._store.write() as tx:
            for start in range(0, len(rows), SAVE_CHUNK):
                await tx.conn.execute(
                    statement,
                    [
                        {
                            "topic": r.topic,
                            "name": r.name,
                            "position": r.position,
                            "last_consumed_at": r.last_consumed_at,
                        }
                        for r in rows[start : start + SAVE_CHUNK]
                    ],
                )

    @asynccontextmanager
    async def claim(self, topic: str, name: str) -> AsyncIterator[GroupClaim]:
        """Lock a consumer group's position until the block ends (shared stores): the claim
        reads messages after the position and may advance it; nothing else moves it meanwhile.
        Committed if advanced, else rolled back.
        """
        try:
            async with self._store.connect() as conn:
                await conn.begin()
                await conn.execute(
                    dialects.insert_ignore(self._store.dialect, consumer_groups),
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
                        await _roll_back(conn)
        except (SQLAlchemyError, OSError) as exc:
            raise StoreUnavailable(f"store read failed: {exc}") from exc


async def _roll_back(conn: AsyncConnection) -> None:
    """Roll a claim back; if its session is gone (PostgreSQL ended it, idle in its transaction
    too long: its replica was frozen), the transaction went with it, and nothing is left to
    undo: the connection is dropped, not handed back to the pool.
    """
    try:
        await conn.rollback()
    except SQLAlchemyError:
        with contextlib.suppress(SQLAlchemyError):
            await conn.invalidate()


class GroupClaim:
    """A consumer group's position, locked for one delivery."""

    def __init__(self, conn: AsyncConnection, topic: str, name: str, position: int) -> None:
        self._conn = conn
        self.topic = topic
        self.name = name
        self.position = position
        self.advanced = False

    async def read(self, limit: int) -> list[tuple[int, str]]:
        """At most ``limit`` messages after the position, as (offset, body), oldest first."""
        try:
            result = await self._conn.execute(messages_after(self.topic, self.position, limit))
        except (SQLAlchemyError, OSError) as exc:
            raise StoreUnavailable(f"store read failed: {exc}") from exc
        return [(row.seq, row.body) for row in result]

    async def advance(self, position: int, at: int) -> None:
        """Move the position to ``position``, consumed at ``at``; committed with the claim."""
        try:
            await self._conn.execute(
                update(consumer_groups)
                .where(consumer_groups.c.topic == self.topic, consumer_groups.c.name == self.name)
                .values(position=position, last_consumed_at=at)
            )
        except (SQLAlchemyError, OSError) as exc:
            # E.g. its session ended (idle in its transaction too long): not consumed.
            raise StoreUnavailable(f"store write failed: {exc}") from exc
        self.position = position
        self.advanced = True


__all__ = ["GroupClaim", "PositionRepository"]
