"""Snapshots of one change that end alike (subscribers with the same filters) keep that end
once: every reader gets whole bodies, and a shared end goes with the last message using it.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from sqlalchemy import Table, func, select

from policy_pubsub.routers import OutMessage, SharedPart
from policy_pubsub.store import Store, topics
from policy_pubsub.store.tables import messages, outbox, snapshot_bodies

POLICIES = '{"p1":{"type":"t","properties":{"x":"' + "y" * 200 + '"}}}}'


def _snapshot(subscriber: str, revision: int, shared: SharedPart | None) -> OutMessage:
    end = POLICIES if shared is None else shared.text
    body = f'{{"subscriber_id":"{subscriber}","revision":{revision},"policies":{end}'
    return OutMessage(f"t-{subscriber}", body, subscriber, revision, shared=shared)


async def _count(store: Store, table: Table) -> int:
    async with store.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def test_a_shared_end_is_stored_once_and_read_whole(store: Store) -> None:
    """Three snapshots sharing their end write one shared body and three short rows; the
    log reads them whole, on the store's own read and on a claimed group's read alike.
    """
    shared = SharedPart(3, POLICIES)
    batch = [_snapshot(s, 7, shared) for s in ("a", "b", "c")] + [OutMessage("t-a", "raw")]
    async with store.write() as tx:
        await tx.append(batch, 100)
    assert await _count(store, snapshot_bodies) == 1
    async with store.read() as conn:
        stored = await conn.execute(select(messages.c.body).where(messages.c.part == 3))
        assert all(len(body) < 60 for (body,) in stored)
    assert await store.topics.messages("t-a", 0, 10) == [(1, batch[0].body), (2, "raw")]
    assert await store.topics.messages("t-b", 0, 10) == [(1, batch[1].body)]
    async with store.positions.claim("t-c", "g") as claim:
        assert await claim.read(10) == [(1, batch[2].body)]


async def test_a_shared_end_goes_with_the_last_message_using_it(store: Store) -> None:
    """Compaction and an unsubscribe each drop messages; the shared end stays while any
    message uses it, and goes with the last one.
    """
    shared = SharedPart(0, POLICIES)
    async with store.write() as tx:
        await tx.append([_snapshot(s, 7, shared) for s in ("a", "b")], 100)
        await tx.append([_snapshot("a", 8, None)], 101)  # supersedes a's snapshot of 7
    assert await store.topics.compact() == 1
    assert await _count(store, snapshot_bodies) == 1  # b's snapshot still uses it
    async with store.write() as tx:
        await tx.drop_subscriber_messages("b", "t-b", 150)
    assert await _count(store, snapshot_bodies) == 0
    assert await store.topics.messages("t-a", 0, 10) == [(2, _snapshot("a", 8, None).body)]

    async with store.write() as tx:
        await tx.append([_snapshot(s, 9, shared) for s in ("a", "b")], 200)
    assert await store.topics.expire(201) == 3
    assert await _count(store, snapshot_bodies) == 0


async def test_the_outbox_keeps_whole_bodies(store: Store) -> None:
    """A router outside the store gets each snapshot whole: the outbox keeps it so."""
    shared = SharedPart(0, POLICIES)
    batch = [_snapshot(s, 7, shared) for s in ("a", "b")]
    async with store.write() as tx:
        await tx.outbox_add(batch, 100)
    async with store.read() as conn:
        bodies = (await conn.execute(select(outbox.c.body).order_by(outbox.c.id))).scalars()
        assert list(bodies) == [m.body for m in batch]
    assert await _count(store, snapshot_bodies) == 0


async def test_compaction_drops_many_snapshots_a_chunk_per_transaction(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compaction deletes at most ``CHUNK_ROWS`` messages per transaction, settling the WAL
    before each, and tells, for each chunk, the highest offset it dropped of each topic; it
    keeps each subscriber's newest snapshot, and a shared body while any message uses it.
    """
    monkeypatch.setattr(topics, "CHUNK_ROWS", 4)
    shared = SharedPart(0, POLICIES)
    async with store.write() as tx:
        for revision in (1, 2, 3, 4):  # a and b: 4 snapshots each, on t-a and t-b
            part = shared if revision < 4 else None
            subscribers = ("a", "b", "c") if revision == 3 else ("a", "b")
            await tx.append([_snapshot(s, revision, part) for s in subscribers], 100)
    assert await _count(store, snapshot_bodies) == 3
    chunks: list[dict[str, int]] = []
    settled = 0
    settle = store.settle_wal

    async def settle_wal() -> None:
        nonlocal settled
        settled += 1
        await settle()

    async def note(highest: Mapping[str, int]) -> None:
        chunks.append(dict(highest))

    monkeypatch.setattr(store, "settle_wal", settle_wal)
    assert await store.topics.compact(dropped=note) == 6
    assert len(chunks) == 2 and settled == 2
    dropped: dict[str, int] = {}
    for chunk in chunks:
        for topic, seq in chunk.items():
            dropped[topic] = max(seq, dropped.get(topic, 0))
    assert dropped == {"t-a": 3, "t-b": 3}
    for subscriber in ("a", "b"):
        newest = _snapshot(subscriber, 4, None).body
        assert await store.topics.messages(f"t-{subscriber}", 0, 10) == [(4, newest)]
    assert await _count(store, snapshot_bodies) == 1  # c's snapshot of 3 still uses it
    assert await store.topics.expire(101) == 3
    assert await _count(store, snapshot_bodies) == 0
