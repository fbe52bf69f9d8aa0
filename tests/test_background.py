"""Background jobs run on one replica at a time: of two processes' jobs on one PostgreSQL
store, one works and the other waits; when the worker stops, the other takes over.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from policy_pubsub.background import Periodic
from policy_pubsub.store import Store
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
