"""The outbox: messages written with the change that causes them, waiting for the relay to
hand them to a router outside the store.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, select

from policy_pubsub.routers.messages import OutMessage
from policy_pubsub.store.dead_letters import supersede
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

    async def delete(self, ids: Sequence[int], delivered: Mapping[str, int] | None = None) -> None:
        """Remove the messages with these ids (the router acknowledged them); in the same
        transaction, mark the open dead letters of the subscribers in ``delivered``
        (subscriber id -> revision the router took) superseded.
        """
        if ids:
            async with self._store.write() as tx:
                await tx.conn.execute(delete(outbox).where(outbox.c.id.in_(list(ids))))
                await supersede(tx.conn, delivered or {})

    async def stats(self) -> tuple[int, int | None]:
        """How many messages wait in the outbox, and when the oldest was written."""
        async with self._store.read() as conn:
            row = (await conn.execute(select(func.count(), func.min(outbox.c.created_at)))).one()
            return int(row[0]), None if row[1] is None else int(row[1])


__all__ = ["OutboxRepository"]
