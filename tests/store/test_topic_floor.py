"""The topic offset floor: a topic row made while maintenance drops topic rows, on a store
replicas share, starts above every offset a dropped row handed out; and maintenance never
drops the row of a topic a transaction under way appends to.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import delete, text, update

from policy_pubsub.routers import OutMessage
from policy_pubsub.store import Store, dialects
from policy_pubsub.store.tables import TOPIC_OFFSET_FLOOR, store_counters
from tests.conftest import postgres_database, wait_for


async def _emptied(store: Store, topic: str, offsets: int) -> None:
    """Make ``topic`` with ``offsets`` offsets handed out, then empty it as its last
    subscription leaving does.
    """
    async with store.write() as tx:
        await tx.append([OutMessage(topic, "{}", key="s")] * offsets, 1)
    async with store.write() as tx:
        assert await tx.drop_subscriber_messages("s", topic, 2)


async def test_rows_made_after_a_drop_start_above_it(store: Store) -> None:
    """Dropping emptied rows raises the floor to the highest last offset dropped, never
    lowers it; topics made later, by an append or as empty topics, start there.
    """
    await _emptied(store, "a", 5)
    await _emptied(store, "b", 2)
    assert await store.topics.drop_emptied() == ["a", "b"]
    assert await store.topics.offset_floor() == 5
    await _emptied(store, "b", 1)  # made again at 6
    assert await store.topics.drop_emptied() == ["b"]
    assert await store.topics.offset_floor() == 6
    async with store.write() as tx:
        assert await tx.append([OutMessage("a", "{}")], 3) == {"a": 7}
        await tx.create_topics(["c"], 3)
    row = await store.topics.get("c")
    assert row is not None and (row.base_offset, row.last_offset) == (6, 6)
    assert await store.topics.drop_emptied() == []  # "a" was published to: not emptied


async def _waiting_for_a_lock(store: Store) -> int:
    """How many sessions of the store's database wait for a lock."""
    async with store.read() as conn:
        result = await conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
        return int(result.scalar_one())


async def test_a_topic_made_while_the_floor_is_raised_starts_above_the_raised_floor() -> None:
    """On PostgreSQL an append that makes a topic row waits for a transaction raising the
    floor, and starts above the floor it raised, though the append's statement began first.
    """
    async with postgres_database() as url:
        store = Store(url)
        await store.open()
        try:
            raising = asyncio.Event()
            go_on = asyncio.Event()

            async def raise_floor() -> None:
                async with store.write() as tx:
                    await dialects.offset_floor_for_update(tx.conn)
                    raising.set()
                    await go_on.wait()
                    await tx.conn.execute(
                        update(store_counters)
                        .where(store_counters.c.name == TOPIC_OFFSET_FLOOR)
                        .values(value=10)
                    )

            async def append() -> dict[str, int]:
                async with store.write() as tx:
                    return await tx.append([OutMessage("t", "{}")], 1)

            async def create() -> None:
                async with store.write() as tx:
                    await tx.create_topics(["e"], 1)

            raiser = asyncio.create_task(raise_floor())
            await raising.wait()
            appending = asyncio.create_task(append())
            creating = asyncio.create_task(create())

            async def both_wait() -> bool:
                return await _waiting_for_a_lock(store) == 2

            await wait_for(both_wait, timeout=5)
            assert not appending.done() and not creating.done()
            go_on.set()
            await raiser
            assert await appending == {"t": 11}
            await creating
            row = await store.topics.get("e")
            assert row is not None and row.last_offset == 10
        finally:
            await store.close()


async def test_maintenance_waits_for_an_append_and_keeps_its_topic() -> None:
    """On PostgreSQL, maintenance that would drop an emptied topic's row waits for an
    append under way to that topic, then sees its message and keeps the row.
    """
    async with postgres_database() as url:
        store = Store(url)
        await store.open()
        try:
            await _emptied(store, "t", 3)
            appended = asyncio.Event()
            go_on = asyncio.Event()

            async def append() -> None:
                async with store.write() as tx:
                    await tx.append([OutMessage("t", "{}")], 5)
                    appended.set()
                    await go_on.wait()

            appending = asyncio.create_task(append())
            await appended.wait()
            dropping = asyncio.create_task(store.topics.drop_emptied())

            async def waits() -> bool:
                return await _waiting_for_a_lock(store) == 1

            await wait_for(waits, timeout=5)
            assert not dropping.done()
            go_on.set()
            await appending
            assert await dropping == []
            row = await store.topics.get("t")
            assert row is not None and row.last_offset == 4 and row.emptied_at is None
        finally:
            await store.close()


async def test_a_missing_floor_row_counts_as_zero_and_is_made_again(store: Store) -> None:
    """Without its floor row (deleted by hand), the store still makes topics, from offset 1,
    and the next drop of emptied rows makes the row again.
    """
    async with store.write() as tx:
        await tx.conn.execute(
            delete(store_counters).where(store_counters.c.name == TOPIC_OFFSET_FLOOR)
        )
    await _emptied(store, "a", 2)
    assert await store.topics.offset_floor() == 0
    assert await store.topics.drop_emptied() == ["a"]
    assert await store.topics.offset_floor() == 2


async def test_a_topic_left_with_only_orphan_snapshots_goes_with_them(store: Store) -> None:
    """Snapshots of a subscriber with no subscription (an older server's leftovers) are
    dropped by maintenance, and their topic's row with them when nothing else uses it; a
    topic where a DMaaP client's message remains keeps its row.
    """
    async with store.write() as tx:
        await tx.append([OutMessage("o", "{}", key="gone", revision=1)], 1)
        await tx.append([OutMessage("m", "{}", key="gone", revision=1), OutMessage("m", "{}")], 1)
    assert await store.topics.drop_orphans() == 3  # two snapshots and one topic row
    assert await store.topics.get("o") is None
    assert await store.topics.get("m") is not None
    assert await store.topics.offset_floor() == 1
