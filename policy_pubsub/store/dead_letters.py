"""Dead letters: messages the router refused for good, taken out of the outbox so that the
messages behind them go on.

The relay buries a refused message (:meth:`DeadLetterRepository.bury`) in one transaction
that records it, counts it, and deletes its outbox rows and those of the messages the router
took before it. A dead letter stays open until the router takes a newer snapshot of the same
subscriber (:func:`supersede`, in the transaction that deletes that snapshot's outbox row):
snapshots are full, so that one carries everything the dead letter did. Open dead letters of
a subscription that still exists make ``/healthcheck`` unhealthy. An operator lists them and
re-queues a fresh snapshot (``policy-pubsub dead-letters --retry``), which removes them; the
retention job removes those older than the retention window.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from policy_pubsub.routers.messages import OutMessage
from policy_pubsub.store import dialects
from policy_pubsub.store.tables import dead_letters, outbox, store_counters, subscriptions

if TYPE_CHECKING:
    from policy_pubsub.store.database import Store

#: The ``store_counters`` row that counts every dead letter ever made.
DEAD_LETTERS_COUNTER = "dead_letters"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message the router refused for good. ``size`` is its body in bytes of UTF-8,
    ``refused_at`` milliseconds since the epoch, ``superseded_by`` the revision of the
    subscriber's next snapshot the router took (None: nothing delivered to it since).
    """

    id: int
    subscriber_id: str | None
    topic: str
    revision: int | None
    size: int
    reason: str
    dedup_id: str | None
    refused_at: int
    superseded_by: int | None


_COLUMNS = (
    dead_letters.c.id,
    dead_letters.c.subscriber_id,
    dead_letters.c.topic,
    dead_letters.c.revision,
    dead_letters.c.size,
    dead_letters.c.reason,
    dead_letters.c.dedup_id,
    dead_letters.c.refused_at,
    dead_letters.c.superseded_by,
)


class DeadLetterRepository:
    """The dead letters (``store.dead_letters``)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def bury(
        self,
        refused: OutMessage,
        reason: str,
        size: int,
        at: int,
        outbox_ids: Sequence[int],
        delivered: Mapping[str, int],
    ) -> DeadLetter:
        """In one transaction: record ``refused`` as a dead letter, count it, delete the
        outbox rows ``outbox_ids`` (the refused message's, and those the router took), and
        mark the open dead letters of the subscribers in ``delivered`` superseded (see
        :func:`supersede`).
        """
        async with self._store.write() as tx:
            conn = tx.conn
            await supersede(conn, delivered)
            result = await conn.execute(
                dead_letters.insert()
                .values(
                    subscriber_id=refused.key,
                    topic=refused.topic,
                    revision=refused.revision,
                    size=size,
                    reason=reason,
                    dedup_id=refused.dedup_id,
                    refused_at=at,
                    superseded_by=None,
                )
                .returning(dead_letters.c.id)
            )
            row_id = int(result.scalar_one())
            await _count_one(conn, self._store.dialect)
            if outbox_ids:
                await conn.execute(delete(outbox).where(outbox.c.id.in_(list(outbox_ids))))
        return DeadLetter(
            row_id,
            refused.key,
            refused.topic,
            refused.revision,
            size,
            reason,
            refused.dedup_id,
            at,
            None,
        )

    async def listing(self) -> list[DeadLetter]:
        """Every dead letter, oldest first."""
        async with self._store.read() as conn:
            result = await conn.execute(select(*_COLUMNS).order_by(dead_letters.c.id))
            return [DeadLetter(*row) for row in result]

    async def open_subscribers(self) -> set[str]:
        """The subscribers with a dead letter that no delivered snapshot superseded yet."""
        async with self._store.read() as conn:
            result = await conn.execute(
                select(dead_letters.c.subscriber_id)
                .where(dead_letters.c.superseded_by.is_(None))
                .where(dead_letters.c.subscriber_id.is_not(None))
                .distinct()
            )
            return {row[0] for row in result}

    async def undelivered(self) -> list[DeadLetter]:
        """The open dead letters of subscriptions that still exist: each such subscriber has
        had nothing delivered since its dead letter. Oldest first.
        """
        async with self._store.read() as conn:
            result = await conn.execute(
                select(*_COLUMNS)
                .join(subscriptions, subscriptions.c.subscriber_id == dead_letters.c.subscriber_id)
                .where(dead_letters.c.superseded_by.is_(None))
                .order_by(dead_letters.c.id)
            )
            return [DeadLetter(*row) for row in result]

    async def figures(self) -> tuple[int, int]:
        """How many dead letters were ever made (kept across restarts, retries and expiry),
        and how many are kept now.
        """
        async with self._store.read() as conn:
            total = await conn.execute(
                select(store_counters.c.value).where(store_counters.c.name == DEAD_LETTERS_COUNTER)
            )
            kept = await conn.execute(select(func.count()).select_from(dead_letters))
            return int(total.scalar_one_or_none() or 0), int(kept.scalar_one())

    async def prune(self, before: int) -> int:
        """Remove the dead letters refused before ``before`` (ms since the epoch); how many."""
        async with self._store.write() as tx:
            result = await tx.conn.execute(
                delete(dead_letters).where(dead_letters.c.refused_at < before)
            )
            return int(result.rowcount or 0)


async def supersede(conn: AsyncConnection, delivered: Mapping[str, int]) -> None:
    """Mark each open dead letter of the subscribers in ``delivered`` (subscriber id ->
    revision of a snapshot the router took) superseded by that revision.
    """
    if delivered:
        await conn.execute(
            update(dead_letters)
            .where(dead_letters.c.subscriber_id == bindparam("delivered_subscriber"))
            .where(dead_letters.c.superseded_by.is_(None))
            .where(
                or_(
                    dead_letters.c.revision.is_(None),
                    dead_letters.c.revision < bindparam("delivered_revision"),
                )
            )
            .values(superseded_by=bindparam("delivered_revision")),
            [{"delivered_subscriber": s, "delivered_revision": r} for s, r in delivered.items()],
        )


async def remove_for(conn: AsyncConnection, dialect: str, subscriber_ids: Iterable[str]) -> int:
    """Delete every dead letter of these subscribers; how many went."""
    ids = sorted(set(subscriber_ids))
    if not ids:
        return 0
    result = await conn.execute(
        delete(dead_letters).where(dialects.among(dialect, dead_letters.c.subscriber_id, ids))
    )
    return int(result.rowcount or 0)


async def _count_one(conn: AsyncConnection, dialect: str) -> None:
    await conn.execute(
        dialects.insert_ignore(dialect, store_counters).values(name=DEAD_LETTERS_COUNTER, value=0)
    )
    await conn.execute(
        update(store_counters)
        .where(store_counters.c.name == DEAD_LETTERS_COUNTER)
        .values(value=store_counters.c.value + 1)
    )


__all__ = ["DEAD_LETTERS_COUNTER", "DeadLetter", "DeadLetterRepository", "remove_for", "supersede"]
