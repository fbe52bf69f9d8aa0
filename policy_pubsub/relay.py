"""The outbox relay: publishes what changes wrote to the outbox to a router outside the store.

A change writes its snapshots to the outbox in its own transaction; the relay publishes them,
oldest first, and deletes them once the router acknowledged them. Delivery is at least once
(a crash between the router's acknowledgement and the delete publishes again; the snapshot's
de-duplication id lets the router drop the copy). One relay at a time holds the outbox, through
a lock in the database, so snapshots leave in the order they were written: a subscriber never
gets an older snapshot after a newer one. Within a batch only each subscriber's newest snapshot
is published; the older ones are superseded.

The relay works in batches, in a pipeline: while the router publishes one batch, the next one
is read and the one before is deleted. A batch is handed to the router only once the previous
one was acknowledged in full: if a publish fails half-way (the router stored some messages and
not others), nothing newer has been sent, and the retry, which starts again from the oldest
row, cannot put an older snapshot of a subscriber after a newer one.

A message the router refuses for good (``MessageRefused``) does not hold up the others: in one
transaction it leaves the outbox for the dead letters (:mod:`policy_pubsub.store.dead_letters`)
with every outbox row it stands for, and the rows the router took before it are deleted; it
is logged once, at ERROR, and the relay goes on with the next message. The subscriber's next
snapshot the router takes supersedes the dead letter (snapshots are full).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from policy_pubsub.background import Periodic
from policy_pubsub.exceptions import MessageRefused, RouterUnavailable, StoreUnavailable
from policy_pubsub.routers import OutMessage, Router
from policy_pubsub.store import DeadLetter, Store, leadership, now_ms
from policy_pubsub.tasks import cancelled

log = logging.getLogger(__name__)

LOCK_NAME = "policy-pubsub outbox relay"


@dataclass(frozen=True, slots=True)
class RelayStatus:
    depth: int
    oldest_age_seconds: float | None
    leader: bool
    last_error: str | None
    failures: int  # attempts to publish that failed in a row, since the last that worked


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
        self.failures = 0
        self.published = 0
        # Subscribers with an open dead letter: the deletes that follow a snapshot of theirs
        # mark it superseded. Read from the store at each pass that finds something to send
        # (another replica's relay may have made some, an operator removed some).
        self._open: set[str] = set()

    @property
    def batch_size(self) -> int:
        """The most outbox rows one batch takes."""
        return self._batch_size

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="policy-pubsub outbox relay")

    async def close(self) -> None:
        task, self._task = self._task, None
        await cancelled(task)

    def wake(self) -> None:
        """A change just wrote to the outbox."""
        self._wake.set()

    async def status(self) -> RelayStatus:
        depth, oldest = await self._store.outbox.stats()
        age = None if oldest is None else max(0.0, (now_ms() - oldest) / 1000)
        return RelayStatus(depth, age, self._leader, self.last_error, self.failures)

    async def _run(self) -> None:
        backoff = 0.0
        async with leadership(self._store, LOCK_NAME) as lock:
            while True:
                if backoff:
                    await self._sleep(backoff)
                try:
                    self._leader = await lock.acquire()
                    if not self._leader:
                        await self._sleep(self._poll_interval * 4)
                        continue
                    await self.relay_pending(lock.acquire)
                except (RouterUnavailable, StoreUnavailable) as exc:
                    if self.last_error is None:
                        log.warning("outbox relay paused, will retry: %s", exc)
                    self.last_error = str(exc)
                    self.failures += 1
                    backoff = min(self._max_backoff, max(0.05, backoff * 2))
                    backoff *= random.uniform(0.8, 1.2)
                    continue
                if self.last_error is not None:
                    log.info("outbox relay resumed after %d failed attempts", self.failures)
                    self.last_error = None
                self.failures = 0
                backoff = 0.0
                await self._sleep(self._poll_interval)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when a change writes to the outbox."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    async def relay_pending(self, leading: Callable[[], Awaitable[bool]] | None = None) -> int:
        """Publish and delete what waits in the outbox, batch after batch, until a batch comes
        back short or ``leading()`` (asked before each batch is published, once it was read)
        says this relay lost the lead; returns how many outbox rows it took.
        """
        moved = 0
        acknowledged: list[tuple[int, OutMessage]] = []  # rows the router holds: deleted
        batch = await self._store.outbox.batch(self._batch_size)  # while the next batch goes
        if batch:  # an idle pass reads the outbox alone
            self._open = await self._store.dead_letters.open_subscribers()
        while batch:
            # Asked once the batch is read, right before it is published: a relay frozen in
            # between, whose lock was ended and taken over meanwhile (store/leader.py), does
            # not publish that batch when it resumes, after the new leader's newer snapshots.
            if leading is not None and not await leading():
                self._leader = False
                break
            reading = asyncio.create_task(self._following(batch))
            deleting = asyncio.create_task(self._delete(acknowledged))
            messages = newest_per_subscriber([m for _, m in batch])
            try:
                await self._router.publish(messages)
            except MessageRefused as refusal:
                await _discard(reading)
                await deleting  # when it failed, the relay starts again from the oldest row
                acknowledged = []
                moved += await self._bury(batch, messages, refusal)
                # What followed the refused message is still in the outbox: from the oldest.
                batch = await self._store.outbox.batch(self._batch_size)
                continue
            except BaseException:
                await _discard(reading)
                await _settle(deleting)  # the publish failure is the one to report
                raise
            try:
                await deleting
            except BaseException:
                await _discard(reading)
                raise
            acknowledged = batch
            moved += len(batch)
            batch = await reading
        await self._delete(acknowledged)
        return moved

    async def _bury(
        self,
        batch: list[tuple[int, OutMessage]],
        published: list[OutMessage],
        refusal: MessageRefused,
    ) -> int:
        """Move the refused message to the dead letters, with every row of ``batch`` it
        stands for (its subscriber's older snapshots in the batch, which it superseded), and
        delete the rows of the messages the router took before it, in one transaction.
        ``published`` is what the router was given. Returns how many rows left the outbox.
        """
        index = next((i for i, m in enumerate(published) if m is refusal.refused), None)
        if index is None:
            raise RouterUnavailable(
                f"the router refused a message it was not given, on {refusal.refused.topic!r}: "
                f"{refusal.reason}"
            )
        refused = published[index]
        taken = published[:index]
        taken_ids = {id(m) for m in taken}
        taken_keys = {(m.topic, m.key) for m in taken if m.key is not None}
        sent: list[int] = []  # rows of the messages the router took
        dead: list[int] = []  # rows the refused message stands for
        for row_id, message in batch:
            if message.key is None:
                if id(message) in taken_ids:
                    sent.append(row_id)
                elif message is refused:
                    dead.append(row_id)
            elif (message.topic, message.key) in taken_keys:
                sent.append(row_id)
            elif (message.topic, message.key) == (refused.topic, refused.key):
                dead.append(row_id)
        delivered = self._delivered(taken)
        size = len(refused.body.encode())
        letter = await self._store.dead_letters.bury(
            refused, refusal.reason, size, now_ms(), sent + dead, delivered
        )
        self._open -= delivered.keys()
        if refused.key is not None:
            self._open.add(refused.key)
        self.published += len(sent)
        _log_dead_letter(letter)
        return len(sent) + len(dead)

    def _delivered(self, messages: Iterable[OutMessage]) -> dict[str, int]:
        """Subscriber -> newest revision among ``messages``, for the subscribers with an
        open dead letter (which those messages supersede).
        """
        return {
            m.key: m.revision
            for m in messages
            if m.key is not None and m.revision is not None and m.key in self._open
        }

    async def _following(self, batch: list[tuple[int, OutMessage]]) -> list[tuple[int, OutMessage]]:
        """The batch after ``batch``; none when it came back short (the outbox was empty)."""
        if len(batch) < self._batch_size:
            return []
        return await self._store.outbox.batch(self._batch_size, after=batch[-1][0])

    async def _delete(self, rows: list[tuple[int, OutMessage]]) -> None:
        if rows:
            delivered = self._delivered(m for _, m in rows)
            await self._store.outbox.delete([row_id for row_id, _ in rows], delivered)
            self._open -= delivered.keys()
            self.published += len(rows)


def dead_letter_retention(store: Store, *, retention_seconds: float, interval: float) -> Periodic:
    """The job that removes dead letters older than ``retention_seconds``, every
    ``interval`` seconds, on one replica at a time (the routers keep messages that long too).
    """

    async def prune() -> int:
        removed = await store.dead_letters.prune(now_ms() - int(retention_seconds * 1000))
        if removed:
            log.info("removed %d dead letters older than %g s", removed, retention_seconds)
        return removed

    return Periodic(
        "dead-letter retention", store, prune, interval=interval, expected=(StoreUnavailable,)
    )


def _log_dead_letter(letter: DeadLetter) -> None:
    log.error(
        "the message router refused for good the message to subscriber %s on topic %s "
        "(revision %s, %d bytes): %s; it is a dead letter now (policy-pubsub dead-letters), "
        "and delivery goes on with the next message",
        letter.subscriber_id or "-",
        letter.topic,
        letter.revision,
        letter.size,
        letter.reason,
    )


async def _discard(task: asyncio.Task[Any]) -> None:
    """Cancel a task and wait until it ended, without raising what it raised."""
    task.cancel()
    await _settle(task)


async def _settle(task: asyncio.Task[Any]) -> None:
    """Wait until a task ended, without raising what it raised."""
    await asyncio.wait((task,))
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not report it


def newest_per_subscriber(batch: list[OutMessage]) -> list[OutMessage]:
    """Drop each snapshot that a later one of the same subscriber on the same topic supersedes;
    messages without a key all stay. Order is kept.
    """
    last: dict[tuple[str, str], int] = {}
    for index, message in enumerate(batch):
        if message.key is not None:
            last[(message.topic, message.key)] = index
    return [m for i, m in enumerate(batch) if m.key is None or last[(m.topic, m.key)] == i]
