"""The outbox relay: publishes what changes wrote to the outbox to a router outside the store.

A change writes its snapshots to the outbox in its own transaction; the relay publishes them,
oldest first, and deletes them once the router acknowledged them. Delivery is at least once
(a crash between the router's acknowledgement and the delete publishes again; the snapshot's
de-duplication id lets the router drop the copy). One relay at a time holds the outbox, through
a lock in the database, so snapshots leave in the order they were written: a subscriber never
gets an older snapshot after a newer one. Within a batch only each subscriber's newest snapshot
is published; the older ones are superseded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass

from policy_pubsub.exceptions import RouterUnavailable, StoreUnavailable
from policy_pubsub.routers import Router
from policy_pubsub.store import OutMessage, Store, now_ms

log = logging.getLogger(__name__)

LOCK_NAME = "policy-pubsub outbox relay"


@dataclass(frozen=True, slots=True)
class RelayStatus:
    depth: int
    oldest_age_seconds: float | None
    leader: bool
    last_error: str | None


class OutboxRelay:
    """Moves outbox rows to the router; every replica runs one, one of them leads."""

    def __init__(
        self,
        store: Store,
        router: Router,
        *,
        batch_size: int = 1000,
        poll_interval: float = 0.5,
        max_backoff: float = 5.0,
    ) -> None:
        self._store = store
        self._router = router
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._max_backoff = max_backoff
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._leader = False
        self.last_error: str | None = None
        self.published = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="policy-pubsub outbox relay")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        """A change just wrote to the outbox."""
        self._wake.set()

    async def status(self) -> RelayStatus:
        depth, oldest = await self._store.outbox_stats()
        age = None if oldest is None else max(0.0, (now_ms() - oldest) / 1000)
        return RelayStatus(depth, age, self._leader, self.last_error)

    async def _run(self) -> None:
        backoff = 0.0
        async with self._store.leadership(LOCK_NAME) as lock:
            while True:
                if backoff:
                    await self._sleep(backoff)
                try:
                    self._leader = await lock.acquire()
                    if not self._leader:
                        await self._sleep(self._poll_interval * 4)
                        continue
                    moved = await self.relay_once()
                except (RouterUnavailable, StoreUnavailable) as exc:
                    if self.last_error is None:
                        log.warning("outbox relay paused, will retry: %s", exc)
                    self.last_error = str(exc)
                    backoff = min(self._max_backoff, max(0.05, backoff * 2))
                    backoff *= random.uniform(0.8, 1.2)
                    continue
                if self.last_error is not None:
                    log.info("outbox relay resumed")
                    self.last_error = None
                backoff = 0.0
                if moved < self._batch_size:
                    await self._sleep(self._poll_interval)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when a change writes to the outbox."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    async def relay_once(self) -> int:
        """Publish one batch and delete it; returns how many outbox rows it took."""
        batch = await self._store.outbox_batch(self._batch_size)
        if not batch:
            return 0
        await self._router.publish(newest_per_subscriber([m for _, m in batch]))
        await self._store.outbox_delete([row_id for row_id, _ in batch])
        self.published += len(batch)
        return len(batch)


def newest_per_subscriber(batch: list[OutMessage]) -> list[OutMessage]:
    """Drop each snapshot that a later one of the same subscriber on the same topic supersedes;
    messages without a key all stay. Order is kept.
    """
    last: dict[tuple[str, str], int] = {}
    for index, message in enumerate(batch):
        if message.key is not None:
            last[(message.topic, message.key)] = index
    return [
        m
        for i, m in enumerate(batch)
        if m.key is None or last[(m.topic, m.key)] == i
    ]
