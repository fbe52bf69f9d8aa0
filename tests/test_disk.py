"""Disk over time: rows that belong to a subscription leave with it, and a SQLite store's
file and WAL shrink back once their data is deleted.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
from sqlalchemy import func, insert, select

from policy_pubsub.file_upkeep import upkeep_once
from policy_pubsub.routers import OutMessage
from policy_pubsub.routers.embedded import EmbeddedRouter
from policy_pubsub.stale import StaleExpiry
from policy_pubsub.store import Store, now_ms
from policy_pubsub.store.tables import consumer_groups, messages, topics
from tests.api.helpers import router as router_of
from tests.conftest import LiveServer, wait_for

SUBSCRIPTIONS = "/decision/v1/subscription"


async def _subscribe(http: httpx.AsyncClient, subscriber_id: str, topic: str) -> None:
    r = await http.post(
        f"{SUBSCRIPTIONS}/{subscriber_id}",
        json={"subscriber_topic": topic, "policy-filters": [{"policy-id": "p*"}]},
    )
    assert r.status_code == 201, r.text


async def _rows(store: Store, topic: str) -> tuple[list[str | None], int, int]:
    """The keys of the topic's messages, its consumer groups, and its topic rows."""
    async with store.read() as conn:
        keys = (await conn.execute(select(messages.c.key).where(messages.c.topic == topic))).all()
        groups = await conn.execute(
            select(func.count())
            .select_from(consumer_groups)
            .where(consumer_groups.c.topic == topic)
        )
        named = await conn.execute(
            select(func.count()).select_from(topics).where(topics.c.name == topic)
        )
        return sorted(k for (k,) in keys), int(groups.scalar_one()), int(named.scalar_one())


async def test_a_subscriptions_rows_leave_with_it(
    server: LiveServer, client: httpx.AsyncClient
) -> None:
    """Unsubscribing drops the subscriber's snapshots; the topic's other messages and its
    consumer groups go with the last subscription on it (by a client or by stale expiry);
    the topic row stays until maintenance, which drops it (the store's offset floor keeps
    its offsets), and drops what outlived its subscription before this was so. A poll of a
    topic whose row went answers as for an unknown topic.
    """
    store = server.state.store
    for subscriber_id, topic in (("a1", "shared"), ("a2", "shared"), ("b", "alone")):
        await _subscribe(client, subscriber_id, topic)
    await _subscribe(client, "c", "unread")
    for topic in ("shared", "alone"):
        r = await client.get(f"/events/{topic}/g/c", params={"timeout": 0})
        assert r.status_code == 200 and r.json()

    async def groups_saved() -> bool:
        return [(await _rows(store, t))[1] for t in ("shared", "alone")] == [1, 1]

    await wait_for(groups_saved, timeout=10)

    assert (await client.delete(f"{SUBSCRIPTIONS}/a1")).status_code == 204
    assert await _rows(store, "shared") == (["a2"], 1, 1)
    assert (await client.delete(f"{SUBSCRIPTIONS}/b")).status_code == 204
    assert await _rows(store, "alone") == ([], 0, 1)
    r = await client.get("/events/alone/g/c", params={"timeout": 0})  # nothing in memory either
    assert r.status_code == 200 and r.json() == []

    expiry = StaleExpiry(server.state.service, store, after=0.001, interval=60)
    assert await expiry.expire_once() == ["c"]
    assert await _rows(store, "unread") == ([], 0, 1)

    # Rows left by an older server: a snapshot of a gone subscriber, a group of a dead topic.
    async with store.write() as tx:
        await tx.conn.execute(
            insert(messages).values(
                topic="shared", seq=99, key="gone", revision=1, body="{}", created_at=now_ms()
            )
        )
        await tx.conn.execute(
            insert(consumer_groups).values(
                topic="alone", name="old", position=3, last_consumed_at=None
            )
        )
    router = router_of(server)
    await router.maintain()
    assert await _rows(store, "shared") == (["a2"], 1, 1)
    assert await _rows(store, "alone") == ([], 0, 0)
    assert await _rows(store, "unread") == ([], 0, 0)
    r = await client.get("/events/alone/g/c", params={"timeout": 0})
    assert r.status_code == 404 and r.json()["mrstatus"] == 3001


def _files(path: Path) -> tuple[int, int]:
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size, wal.stat().st_size if wal.exists() else 0


async def _fill_and_empty(store: Store, path: Path) -> int:
    """Write about 8 MB of messages, then expire them all; the file's size when full."""
    router = EmbeddedRouter(
        store, retention_seconds=0.001, maintenance_interval_seconds=3600, position_flush_seconds=0
    )
    body = "x" * 4000
    for batch in range(20):
        await router.publish([OutMessage(topic=f"t{batch}", body=body) for _ in range(100)])
    full = sum(_files(path))
    assert full > 8_000_000
    await router.maintain()
    return full


async def test_file_upkeep_hands_free_pages_back_and_truncates_the_wal(tmp_path: Path) -> None:
    """After its data is deleted, one run of the file upkeep leaves the SQLite file small and
    its WAL empty; a database made before incremental auto-vacuum is rewritten once, and
    switched to it.
    """
    for name, old in (("new.db", False), ("old.db", True)):
        path = tmp_path / name
        if old:  # as an older server left it: auto-vacuum off, set when the first table was made
            with sqlite3.connect(path) as made:
                made.execute("PRAGMA auto_vacuum=NONE")
                made.execute("CREATE TABLE made_before (x)")
        store = Store(f"sqlite+aiosqlite:///{path}")
        await store.open()
        try:
            full = await _fill_and_empty(store, path)
            done = await upkeep_once(store)
            assert done.vacuumed == old and done.freed > 0 and not done.wal_busy
            size, wal = _files(path)
            assert wal == 0
            assert size < full / 4
            async with store.file_statements() as sql:
                assert (await sql.rows("PRAGMA auto_vacuum"))[0][0] == 2
        finally:
            await store.close()
