"""Consumer group positions loaded in bulk at start, on a store of one process and on a
store that replicas share.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from policy_pubsub.routers.positions import Positions
from policy_pubsub.store import GroupRow, Store
from tests.conftest import postgres_database


@pytest.fixture
async def shared_stores() -> AsyncIterator[tuple[Store, Store]]:
    """Two replicas' stores on one fresh PostgreSQL database."""
    async with postgres_database() as url:
        one, two = Store(url), Store(url)
        await one.open()
        await two.open()
        try:
            yield one, two
        finally:
            await one.close()
            await two.close()


async def test_a_single_process_store_loads_every_group_and_knows_new_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a store of one process the positions the store holds are loaded at once, and a
    group it does not hold starts at 0 without a look-up.
    """
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'db'}")
    await store.open()
    try:
        await store.positions.save([GroupRow("t", "g", 3, 100), GroupRow("u", "g", 1, 200)])
        positions = Positions(store, flush_seconds=0)
        await positions.load()

        async def group(topic: str, name: str) -> GroupRow | None:
            raise AssertionError(f"looked up {topic}/{name}")

        monkeypatch.setattr(store.positions, "group", group)
        loaded = await positions.get("t", "g")
        new = await positions.get("t", "new")
        assert (loaded.position, loaded.last_consumed_at, loaded.stale) == (3, 100, False)
        assert (new.position, new.stale) == (0, False)
    finally:
        await store.close()


async def test_on_a_shared_store_a_group_created_after_start_is_looked_up(
    shared_stores: tuple[Store, Store],
) -> None:
    """On a shared store the groups held at start are loaded (advisory, as the embedded
    router claims each read), and a group another replica creates later is still found.
    """
    mine, theirs = shared_stores
    await theirs.positions.save([GroupRow("t", "early", 2, 100)])
    positions = Positions(mine, flush_seconds=0)
    await positions.load(advisory=True)
    await theirs.positions.save([GroupRow("t", "late", 5, 200)])
    early = await positions.get("t", "early")
    late = await positions.get("t", "late")
    assert (early.position, early.stale) == (2, False)
    assert (late.position, late.last_consumed_at) == (5, 200)


async def test_on_a_shared_store_positions_are_not_loaded_unless_advisory(
    shared_stores: tuple[Store, Store],
) -> None:
    """Where the cached position is the one a read trusts (the NATS router), nothing is
    loaded at start on a shared store: each group is looked up at its first read, when it is
    more recent.
    """
    mine, theirs = shared_stores
    await theirs.positions.save([GroupRow("t", "g", 2, 100)])
    positions = Positions(mine, flush_seconds=0)
    await positions.load()
    await theirs.positions.save([GroupRow("t", "g", 4, 300)])
    state = await positions.get("t", "g")
    assert (state.position, state.last_consumed_at) == (4, 300)


async def test_marked_stale_every_group_is_looked_up_again(tmp_path: Path) -> None:
    """Once marked stale (announcements were missed), groups loaded at start and groups not
    seen yet are read from the store again.
    """
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'db'}")
    await store.open()
    try:
        await store.positions.save([GroupRow("t", "g", 1, 100)])
        positions = Positions(store, flush_seconds=0)
        await positions.load()
        await store.positions.save([GroupRow("t", "g", 3, 300), GroupRow("t", "h", 2, 200)])
        positions.mark_stale()
        assert (await positions.get("t", "g")).position == 3
        assert (await positions.get("t", "h")).position == 2
    finally:
        await store.close()


async def test_a_topic_forgotten_loses_its_groups_unless_a_delivery_is_open(
    tmp_path: Path,
) -> None:
    """Forgetting a topic (its groups dropped in the store) keeps every group while one of
    them has a delivery open; then drops all of them, with their unsaved positions, and
    leaves the other topics' groups and their unsaved positions alone.
    """
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'db'}")
    await store.open()
    try:
        positions = Positions(store, flush_seconds=3600)  # saved only when flushed here
        await positions.load()
        gone, busy = await positions.get("t", "g"), await positions.get("t", "h")
        kept = await positions.get("u", "g")
        await positions.advance(gone, 5)
        await positions.advance(kept, 7)
        await busy.lock.acquire()  # as a read that found messages holds it
        assert not positions.forget_topic("t")
        assert {(s.topic, s.name) for s in positions.states()} == {
            ("t", "g"),
            ("t", "h"),
            ("u", "g"),
        }
        busy.lock.release()
        assert positions.forget_topic("t")
        assert [(s.topic, s.name) for s in positions.states()] == [("u", "g")]
        assert list(positions.of_topic("t")) == []
        await positions.flush()
        assert await store.positions.group("t", "g") is None
        saved = await store.positions.group("u", "g")
        assert saved is not None and saved.position == 7
        again = await positions.get("t", "g")
        assert (again.position, again.stale) == (0, False)  # a new group, as the store has it
    finally:
        await store.close()
