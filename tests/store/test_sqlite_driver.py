"""SQLite statements run in one trip each to aiosqlite's thread, and answer as before."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import insert, select, text, update
from sqlalchemy.exc import IntegrityError

from policy_pubsub.store import Store
from policy_pubsub.store.sqlite_driver import OneTripCursor
from policy_pubsub.store.tables import store_revision, topics


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The name of each call made in aiosqlite's thread, in order."""
    made: list[str] = []
    original = aiosqlite.Connection._execute

    async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        made.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    yield made


async def test_a_statement_is_one_trip(store: Store, trips: list[str]) -> None:
    """An UPDATE ... RETURNING, an executemany INSERT and a SELECT make one trip each, the
    commit one more, and each answers its rows and row count as before.
    """
    async with store.write() as tx:
        trips.clear()
        result = await tx.conn.execute(
            update(store_revision)
            .where(store_revision.c.id == 1)
            .values(revision=store_revision.c.revision + 1)
            .returning(store_revision.c.revision)
        )
        revision = result.scalar_one()
        rows = [{"name": f"t{i}", "last_offset": i, "created_at": 1} for i in range(3)]
        inserted = await tx.conn.execute(insert(topics), rows)
        assert inserted.rowcount == 3
        found = await tx.conn.execute(select(topics.c.name).order_by(topics.c.name))
        assert [name for (name,) in found] == ["t0", "t1", "t2"]
        assert len(trips) == 3
    assert trips[-1] == "commit"
    assert len(trips) == 4
    async with store.read() as conn:
        stored = await conn.execute(select(store_revision.c.revision))
        assert stored.scalar_one() == revision


async def test_errors_and_rollback(store: Store, trips: list[str]) -> None:
    """A failing statement raises SQLAlchemy's error and its transaction is rolled back; a
    connection given back with no transaction open is not rolled back again.
    """
    with pytest.raises(IntegrityError):
        async with store._writer.begin() as conn:
            await conn.execute(insert(topics), [{"name": "t", "last_offset": 0, "created_at": 1}])
            await conn.execute(insert(topics), [{"name": "t", "last_offset": 0, "created_at": 1}])
    async with store.read() as conn:
        assert (await conn.execute(select(topics.c.name))).all() == []
    trips.clear()
    async with store._writer.connect() as conn:
        await conn.execute(text("SELECT 1"))  # BEGIN IMMEDIATE with it; closing rolls back
    assert trips == ["_run", "rollback"]
    trips.clear()
    async with store.write() as tx:
        await tx.conn.execute(text("SELECT 1"))
    assert trips == ["_run", "commit"]  # committed: the pool's reset makes no trip


async def test_begin_runs_with_the_first_statement(store: Store, trips: list[str]) -> None:
    """BEGIN IMMEDIATE makes no trip of its own: it runs in the first statement's, which
    then holds the write lock; a transaction that ran no statement makes no trip at all.
    """
    async with store.write() as tx:
        raw = await tx.conn.get_raw_connection()
        sqlite = raw.driver_connection._conn  # type: ignore[union-attr]
        assert trips == []
        assert not sqlite.in_transaction
        await tx.conn.execute(update(store_revision).values(revision=store_revision.c.revision + 1))
        assert trips == ["_run"]
        assert sqlite.in_transaction
    assert trips == ["_run", "commit"]
    trips.clear()
    async with store.write():
        pass
    assert trips == []


async def test_cursors_are_one_trip(store: Store) -> None:
    """The store's SQLite connections hand out one-trip cursors."""
    async with store._writer.connect() as conn:
        raw = await conn.get_raw_connection()
        assert isinstance(raw.dbapi_connection.cursor(), OneTripCursor)  # type: ignore[union-attr]
