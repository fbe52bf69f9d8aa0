"""Replicas on one PostgreSQL store hear of each other's commits, and survive losing that line."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from policy_pubsub.store import Store
from policy_pubsub.store.notify import APPLICATION_NAME
from policy_pubsub.store.state import APPLICATION_NAME as CATCH_UP
from tests.conftest import (
    LiveServer,
    make_settings,
    postgres_database,
    start_server,
    stop_server,
    wait_for,
)


@pytest.fixture
async def two_replicas(tmp_path: Path) -> AsyncIterator[tuple[LiveServer, LiveServer]]:
    async with postgres_database() as url:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        a, a_task = await start_server(make_settings(tmp_path / "a", database_url=url))
        b, b_task = await start_server(make_settings(tmp_path / "b", database_url=url))
        try:
            yield a, b
        finally:
            await stop_server(b, b_task)
            await stop_server(a, a_task)


def _store(server: LiveServer) -> Store:
    store: Store = server.state.store
    return store


async def _terminate_listeners(store: Store, name: str = APPLICATION_NAME) -> int:
    """Cut every LISTEN connection (or those named ``name``) to this database from the
    server side.
    """
    async with store.read() as conn:
        result = await conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = :name"
            ),
            {"name": name},
        )
        return len(result.all())


async def _long_poll_woken_across(a: LiveServer, b: LiveServer, topic: str) -> None:
    """A poll held on B answers when A publishes, well before its timeout."""
    async with httpx.AsyncClient(timeout=30) as http:
        await http.post(f"{a.url}/events/{topic}", json={"first": True})
        await http.get(f"{b.url}/events/{topic}/g/c", params={"timeout": 0})
        loop = asyncio.get_running_loop()
        poll = asyncio.create_task(
            http.get(f"{b.url}/events/{topic}/g/c", params={"timeout": 20000})
        )
        await wait_for(lambda: b.state.router.held_reads == 1)
        started = loop.time()
        await http.post(f"{a.url}/events/{topic}", json={"second": True})
        answer = await asyncio.wait_for(poll, timeout=10)
        assert answer.json() == ['{"second":true}']
        assert loop.time() - started < 5


async def test_a_commit_on_one_replica_wakes_a_poll_on_another(
    two_replicas: tuple[LiveServer, LiveServer],
) -> None:
    """The notification of A's commit wakes the long-poll held on B."""
    a, b = two_replicas
    await _long_poll_woken_across(a, b, "t1")


async def test_a_lost_notification_connection_is_re_established(
    two_replicas: tuple[LiveServer, LiveServer],
) -> None:
    """When the database drops the listening connections (and those the replicas catch up
    on), both replicas notice, listen again, and a commit on one still wakes a poll on the
    other; reads see the other's changes.
    """
    a, b = two_replicas
    notifications = [n for n in (_store(s).notifications for s in (a, b)) if n is not None]
    assert len(notifications) == 2
    assert all(n.connected and n.connections == 1 for n in notifications)
    async with httpx.AsyncClient(timeout=30) as http:

        async def push(name: str) -> int:
            policy = {"type": "t", "name": name, "version": "1"}
            answer = await http.post(f"{a.url}/pap/v1/policies", json={"policies": [policy]})
            assert answer.is_success
            revision: int = answer.json()["revision"]
            return revision

        first = await push("p0")
        # B follows by itself, on its catch-up connection.
        await wait_for(lambda: b.state.service.revision >= first)
        assert await _terminate_listeners(_store(a), CATCH_UP) >= 1
        assert await _terminate_listeners(_store(a)) >= 2
        await wait_for(
            lambda: all(n.connected and n.connections == 2 for n in notifications), timeout=15
        )
        await _long_poll_woken_across(a, b, "t2")
        second = await push("p1")
        # And again, on a new catch-up connection.
        await wait_for(lambda: b.state.service.revision >= second)
        decision = await http.post(f"{b.url}/decision/v1", json={"resource": {"policy-id": "p1"}})
        assert list(decision.json()["policies"]) == ["p1"]
