"""What only the embedded router does: compaction, retention, positions in the store."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from policy_pubsub.routers import OutMessage, embedded, from_url
from policy_pubsub.routers.embedded import EmbeddedRouter
from policy_pubsub.store import GroupRow, Store, now_ms
from tests.conftest import make_settings, wait_for


async def _open(path: Path, *, retention: float = 3600) -> tuple[EmbeddedRouter, Store]:
    store = Store(f"sqlite+aiosqlite:///{path}")
    await store.open()
    router = EmbeddedRouter(
        store,
        retention_seconds=retention,
        maintenance_interval_seconds=3600,
        position_flush_seconds=0.01,
    )
    await router.start()
    return router, store


async def _close(router: EmbeddedRouter, store: Store) -> None:
    await router.close()
    await store.close()


def _snapshot(topic: str, subscriber: str, revision: int) -> OutMessage:
    body = f'{{"subscriber_id":"{subscriber}","revision":{revision}}}'
    return OutMessage(topic=topic, body=body, key=subscriber, revision=revision)


async def test_compaction_keeps_newest_snapshot_per_subscriber(tmp_path: Path) -> None:
    """Compaction drops every snapshot a newer one of the same subscriber supersedes."""
    router, store = await _open(tmp_path / "db")
    try:
        await router.publish([_snapshot("t", "a", 1), _snapshot("t", "b", 2)])
        await router.publish([_snapshot("t", "a", 3)])
        await router.publish([OutMessage(topic="t", body='{"raw":1}')])
        expired, compacted = await router.maintain()
        assert (expired, compacted) == (0, 1)
        async with await router.read("t", "g", "c", timeout=0, limit=10) as delivery:
            assert list(delivery.messages) == [
                '{"subscriber_id":"b","revision":2}',
                '{"subscriber_id":"a","revision":3}',
                '{"raw":1}',
            ]
    finally:
        await _close(router, store)


async def test_retention_drops_old_messages(tmp_path: Path) -> None:
    """Messages older than the retention period are dropped; newer ones stay."""
    router, store = await _open(tmp_path / "db", retention=0.2)
    try:
        await router.publish([OutMessage(topic="t", body='{"n":1}')])
        published = now_ms()
        await wait_for(lambda: now_ms() - published > 300, timeout=5)
        await router.publish([OutMessage(topic="t", body='{"n":2}')])
        expired, _ = await router.maintain()
        assert expired == 1
        async with await router.read("t", "g", "c", timeout=0, limit=10) as delivery:
            assert list(delivery.messages) == ['{"n":2}']
    finally:
        await _close(router, store)


async def test_positions_survive_a_restart(tmp_path: Path) -> None:
    """A consumer group's position is kept in the store across a router restart."""
    path = tmp_path / "db"
    router, store = await _open(path)
    await router.publish([OutMessage(topic="t", body=f'{{"n":{n}}}') for n in range(3)])
    async with await router.read("t", "g", "c", timeout=0, limit=2) as delivery:
        await delivery.ack()
    await _close(router, store)

    router, store = await _open(path)
    try:
        async with await router.read("t", "g", "c", timeout=0, limit=10) as delivery:
            assert list(delivery.messages) == ['{"n":2}']
        stats = await router.stats("t")
        assert [(g.name, g.position) for g in stats.consumer_groups] == [("g", 2)]
    finally:
        await _close(router, store)


async def test_reading_past_compacted_messages_moves_on(tmp_path: Path) -> None:
    """A group whose unread messages were all compacted away waits for new ones."""
    router, store = await _open(tmp_path / "db")
    try:
        await router.publish([_snapshot("t", "a", 1)])
        async with await router.read("t", "g", "c", timeout=0, limit=10) as delivery:
            await delivery.ack()
        await router.publish([_snapshot("t", "a", 2)])
        await router.publish([_snapshot("t", "a", 3)])
        await router.maintain()
        async with await router.read("t", "g", "c", timeout=0, limit=10) as delivery:
            assert list(delivery.messages) == ['{"subscriber_id":"a","revision":3}']
    finally:
        await _close(router, store)


async def test_positions_are_loaded_at_start_not_looked_up_per_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a restart every group resumes where it stood, from the positions the router
    loaded at start, without one store look-up per group.
    """
    path = tmp_path / "db"
    router, store = await _open(path)
    await router.publish([OutMessage(topic=t, body=f'{{"n":{n}}}') for t in "ab" for n in range(3)])
    for topic, consumed in (("a", 2), ("b", 1)):
        async with await router.read(topic, "g", "c", timeout=0, limit=consumed) as delivery:
            await delivery.ack()
    await _close(router, store)

    router, store = await _open(path)
    looked_up: list[tuple[str, str]] = []
    real_group = store.positions.group

    async def group(topic: str, name: str) -> GroupRow | None:
        looked_up.append((topic, name))
        return await real_group(topic, name)

    monkeypatch.setattr(store.positions, "group", group)
    try:
        for topic, rest in (("a", ['{"n":2}']), ("b", ['{"n":1}', '{"n":2}'])):
            async with await router.read(topic, "g", "c", timeout=0, limit=10) as delivery:
                assert list(delivery.messages) == rest
        assert looked_up == []
    finally:
        await _close(router, store)


async def test_a_group_new_after_start_starts_at_the_oldest_without_a_look_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a store this process alone uses, a group the store did not hold at start is new:
    it reads from the oldest retained message, and nothing is asked of the store about it.
    """
    router, store = await _open(tmp_path / "db")

    async def group(topic: str, name: str) -> GroupRow | None:
        raise AssertionError(f"looked up {topic}/{name}")

    monkeypatch.setattr(store.positions, "group", group)
    try:
        await router.publish([OutMessage(topic="t", body=f'{{"n":{n}}}') for n in range(2)])
        async with await router.read("t", "late", "c", timeout=0, limit=10) as delivery:
            assert list(delivery.messages) == ['{"n":0}', '{"n":1}']
            await delivery.ack()
        async with await router.read("t", "late", "c", timeout=0, limit=10) as delivery:
            assert list(delivery.messages) == []
    finally:
        await _close(router, store)


async def test_tails_evict_the_least_recently_appended_topics_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the memory cap the topics appended to longest ago lose their tails first; a topic
    appended to again moves to the back; reads of an evicted topic come from the store.
    """
    monkeypatch.setattr(embedded, "TAIL_CHARS", 350)
    router, store = await _open(tmp_path / "db")
    try:
        body = "x" * 100
        for topic in ("a", "b", "c"):
            await router.publish([OutMessage(topic=topic, body=body)])
        await router.publish([OutMessage(topic="a", body="y" * 10)])  # a: most recent
        router._fold()
        assert list(router._tails) == ["b", "c", "a"]
        await router.publish([OutMessage(topic="d", body=body)])  # over the cap: b goes
        router._fold()
        assert list(router._tails) == ["c", "a", "d"]
        assert router._tail_chars == sum(len(b) for t in router._tails.values() for _, b in t)
        async with await router.read("b", "g", "c", timeout=0, limit=10) as delivery:
            assert list(delivery.messages) == [body]
    finally:
        await _close(router, store)


async def test_tails_are_built_at_the_first_read_and_answer_it_from_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit leaves the tails as they were; the first read takes in what commits
    appended since, in order, and is answered from memory, without a store query; a topic
    dropped from memory before that is read from the store.
    """
    router, store = await _open(tmp_path / "db")

    async def no_query(topic: str, after: int, limit: int) -> list[tuple[int, str]]:
        raise AssertionError(f"read {topic} from the store")

    try:
        await router.publish([OutMessage(topic=t, body=f"{t}1") for t in "abc"])
        await router.publish([OutMessage(topic="a", body="a2"), OutMessage(topic="b", body="b2")])
        assert not router._tails
        monkeypatch.setattr(store.topics, "messages", no_query)
        async with await router.read("a", "g", "c", timeout=0, limit=10) as delivery:
            assert list(delivery.messages) == ["a1", "a2"]
        assert {t: [b for _, b in tail] for t, tail in router._tails.items()} == {
            "a": ["a1", "a2"],
            "b": ["b1", "b2"],
            "c": ["c1"],
        }
        monkeypatch.undo()
        await router.publish([OutMessage(topic="c", body="c2")])
        router.forget_tail("c")  # as a subscription leaving "c" does
        assert "c" not in router._tails
        async with await router.read("c", "g", "c", timeout=0, limit=10) as delivery:
            assert list(delivery.messages) == ["c1", "c2"]  # from the store
    finally:
        await _close(router, store)


async def test_maintenance_keeps_the_tails_it_does_not_drop_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Maintenance trims the tails of the topics it drops messages from to what comes after
    them, and leaves the others: reads of both are answered from memory afterwards, and
    none gets a message the store dropped.
    """
    router, store = await _open(tmp_path / "db")

    async def no_query(topic: str, after: int, limit: int) -> list[tuple[int, str]]:
        raise AssertionError(f"read {topic} from the store")

    try:
        await router.publish([_snapshot("a", "x", 1), OutMessage(topic="b", body="b1")])
        await router.publish([_snapshot("a", "x", 2), OutMessage(topic="b", body="b2")])
        async with await router.read("a", "g", "c", timeout=0, limit=1) as delivery:
            assert list(delivery.messages) == [_snapshot("a", "x", 1).body]
            await delivery.ack()
        assert await router.maintain() == (0, 1)  # x's snapshot of 1 goes
        assert {t: [seq for seq, _ in tail] for t, tail in router._tails.items()} == {
            "a": [2],
            "b": [1, 2],
        }
        monkeypatch.setattr(store.topics, "messages", no_query)
        async with await router.read("b", "g", "c", timeout=0, limit=10) as delivery:
            assert list(delivery.messages) == ["b1", "b2"]
        async with await router.read("a", "g", "c", timeout=0, limit=10) as delivery:
            assert list(delivery.messages) == [_snapshot("a", "x", 2).body]
        monkeypatch.undo()
        async with await router.read("a", "new", "c", timeout=0, limit=10) as delivery:
            assert list(delivery.messages) == [_snapshot("a", "x", 2).body]  # from the store
    finally:
        await _close(router, store)


async def test_reads_during_maintenance_do_not_see_what_it_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once maintenance dropped messages (its later steps run after), a read of their topic
    goes to the store: it never gets a message the store has dropped.
    """
    router, store = await _open(tmp_path / "db", retention=0.001)
    seen: list[list[str]] = []
    compact = store.topics.compact

    async def compact_after_a_read(**kwargs: Any) -> int:
        async with await router.read("t", "g", "c", timeout=0, limit=10) as delivery:
            seen.append(list(delivery.messages))
        return await compact(**kwargs)

    try:
        await router.publish([OutMessage(topic="t", body="old")])
        await asyncio.sleep(0.01)  # older than the retention
        monkeypatch.setattr(store.topics, "compact", compact_after_a_read)
        assert await router.maintain() == (1, 0)
        assert seen == [[]]
    finally:
        await _close(router, store)


async def test_from_url_carries_the_servers_max_message_bytes(tmp_path: Path) -> None:
    """The embedded router's largest message is the ``max_message_bytes`` setting, the same
    cap as ``POST /events``.
    """
    settings = make_settings(tmp_path, max_message_bytes=4096)
    store = Store(settings.database_url)
    router = from_url("embedded", store, settings)
    assert isinstance(router, EmbeddedRouter) and router.max_message_bytes == 4096
