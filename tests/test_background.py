"""Background jobs run on one replica at a time: of two processes' jobs on one PostgreSQL
store, one works and the other waits; when the worker stops, the other takes over.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from policy_pubsub.background import Periodic, change_log_pruning, prune_change_log
from policy_pubsub.config import Settings
from policy_pubsub.store import PolicyRow, Store, now_ms
from policy_pubsub.store.tables import change_log, change_log_floor, mark_log
from tests.conftest import postgres_database, wait_for

INTERVAL = 0.02


@pytest.fixture
async def stores() -> AsyncIterator[tuple[Store, Store]]:
    """Two stores on one fresh PostgreSQL database, as two replicas would have."""
    async with postgres_database() as url:
        first, second = Store(url), Store(url)
        await first.open()
        await second.open()
        try:
            yield first, second
        finally:
            await first.close()
            await second.close()


async def test_one_replica_at_a_time_does_the_work_and_another_takes_over(
    stores: tuple[Store, Store],
) -> None:
    done: dict[str, int] = {"a": 0, "b": 0}

    def work(replica: str) -> Periodic:
        async def run() -> None:
            done[replica] += 1

        store = stores[0] if replica == "a" else stores[1]
        return Periodic("test retention", store, run, interval=INTERVAL)

    first, second = work("a"), work("b")
    first.start()
    await wait_for(lambda: done["a"] >= 3)
    second.start()
    a_before = done["a"]
    await wait_for(lambda: done["a"] >= a_before + 10)
    assert done["b"] == 0  # the second waited all the while
    assert first.leading and not second.leading
    await first.close()
    await wait_for(lambda: done["b"] >= 3)
    assert second.leading
    await second.close()


async def test_a_failing_run_is_retried_at_the_next_interval(
    stores: tuple[Store, Store],
) -> None:
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("the first run fails")

    job = Periodic("test flaky", stores[0], flaky, interval=INTERVAL, expected=(ConnectionError,))
    job.start()
    await wait_for(lambda: calls >= 3)
    await job.close()


async def test_the_change_log_keeps_what_the_setting_says(
    stores: tuple[Store, Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pruning job keeps the change log and the mark log ``change_log_keep_seconds``:
    a revision younger stays, and once older it goes from both, raising the log's floor.
    """
    monkeypatch.setenv("POLICY_PUBSUB_CHANGE_LOG_KEEP_SECONDS", "0.2")
    keep = Settings().change_log_keep_seconds
    assert keep == 0.2
    store = stores[0]
    async with store.write() as tx:
        revision = await tx.next_revision()
        at = now_ms()
        await tx.put_policies([PolicyRow("p1", "1.0.0", "t", None, "{}", revision, at)])
        await tx.mark_published(["s1", "s2"], revision, at)
    assert await prune_change_log(store, keep) == 0  # younger than it keeps

    async def logged() -> tuple[int, int, int]:
        async with store.read() as conn:
            changes = (await conn.execute(select(func.count()).select_from(change_log))).one()
            marks = (await conn.execute(select(func.count()).select_from(mark_log))).one()
            floor = (await conn.execute(select(change_log_floor.c.revision))).one()
        return int(changes[0]), int(marks[0]), int(floor[0])

    assert await logged() == (1, 1, revision - 1)

    async def pruned() -> bool:
        return (await logged())[:2] == (0, 0)

    job = change_log_pruning(store, interval=INTERVAL, keep_seconds=keep)
    job.start()
    try:
        await wait_for(pruned)
    finally:
        await job.close()
    assert await logged() == (0, 0, revision)


def test_the_change_log_keeps_a_positive_time() -> None:
    with pytest.raises(ValidationError):
        Settings(change_log_keep_seconds=0)
