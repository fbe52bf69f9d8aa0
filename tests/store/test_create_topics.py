"""A change through the outbox creates its subscribers' topics in one statement."""

from __future__ import annotations

from sqlalchemy import select

from policy_pubsub.routers import OutMessage
from policy_pubsub.store import Store
from policy_pubsub.store.tables import topics


async def _topics(store: Store) -> dict[str, tuple[int, int]]:
    """name -> (last_offset, created_at)"""
    async with store.read() as conn:
        result = await conn.execute(
            select(topics.c.name, topics.c.last_offset, topics.c.created_at)
        )
        return {name: (last, created) for name, last, created in result}


async def test_creates_the_missing_topics_and_leaves_existing_ones_as_they_are(
    store: Store,
) -> None:
    """Existing topics keep their offset and creation time; new names (given more than once,
    in any order, thousands at a time) are created once each, empty.
    """
    async with store.write() as tx:
        await tx.append([OutMessage("t-0001", "{}", key="d", revision=1, dedup_id="d@1")], at=100)
    names = [f"t-{i:04d}" for i in range(2500, 0, -1)] + ["t-0002", "Z", "a.b"]
    async with store.write() as tx:
        await tx.create_topics(names, at=200)
    found = await _topics(store)
    assert found["t-0001"] == (1, 100)
    assert set(found) == set(names)
    assert all(found[name] == (0, 200) for name in set(names) - {"t-0001"})
    async with store.write() as tx:
        await tx.create_topics(["t-0002", "new"], at=300)
        await tx.create_topics([], at=300)
    found = await _topics(store)
    assert found["t-0002"] == (0, 200)
    assert found["new"] == (0, 300)
    assert len(found) == len(set(names)) + 1
