"""What only the embedded router does: compaction, retention, positions in the store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from policy_pubsub import slices
from policy_pubsub.exceptions import NotFound, StoreUnavailable
from policy_pubsub.routers import OutMessage, embedded, from_url
from policy_pubsub.routers.embedded import EmbeddedRouter
from policy_pubsub.service.outlets import InStoreOutlet
from policy_pubsub.store import GroupClaim, GroupRow, Store, SubscriptionRow, now_ms
from policy_pubsub.store.dialects import SessionTimeouts
from policy_pubsub.store.leader import LeaderLock
from tests.conftest import make_settings, postgres_database, wait_for


async def _open(
    path: Path | str,
    *,
    retention: float = 3600,
    snapshots_of_subscriptions: bool = False,
    timeouts: SessionTimeouts | None = None,
    maintenance: float = 3600,
) -> tuple[EmbeddedRouter, Store]:
    """A router on a SQLite file (a path), or on the store at a URL."""
    store = Store(path if isinstance(path, str) else f"sqlite+aiosqlite:///{path}", timeouts)
    await store.open()
    router = EmbeddedRouter(
        store,
        retention_seconds=retention,
        maintenance_interval_seconds=maintenance,
        position_flush_seconds=0.01,
        snapshots_of_subscriptions=snapshots_of_subscriptions,
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
        await router.forget_tail("c")  # as a subscription leaving "c" does
        assert "c" not in router._tails
        async with await router.read("c", "g", "c", timeout=0, limit=10) as delivery:
            assert list(delivery.messages) == ["c1", "c2"]  # from the store
    finally:
        await _close(router, store)


async def test_held_reads_are_woken_once_the_tails_are_built_in_slices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A push to many held reads has the tails built a few topics per event-loop turn, and
    wakes the reads once they are: each read gets its topic's message, once, from memory,
    and none is woken before the tails are complete.
    """
    monkeypatch.setattr(embedded, "FOLD_STEP", 2)
    monkeypatch.setattr(slices, "SLICE_SECONDS", 0.0)
    router, store = await _open(tmp_path / "db")
    topics = [f"t{n}" for n in range(40)]

    async def no_query(topic: str, after: int, limit: int) -> list[tuple[int, str]]:
        raise AssertionError(f"read {topic} from the store")

    turns_with_tails_pending: list[int] = []

    async def held_read(topic: str) -> list[str]:
        async with await router.read(topic, "g", "c", timeout=30, limit=10) as delivery:
            turns_with_tails_pending.append(len(router._unfolded))
            await delivery.ack()
            return list(delivery.messages)

    try:
        await router.publish([OutMessage(topic=t, body="old") for t in topics])
        for topic in topics:  # each group consumes the old message
            async with await router.read(topic, "g", "c", timeout=0, limit=10) as delivery:
                await delivery.ack()
        reads = [asyncio.create_task(held_read(t)) for t in topics]
        await wait_for(lambda: router.held_reads == len(topics))
        monkeypatch.setattr(store.topics, "messages", no_query)
        turns = 0

        async def count_turns() -> None:
            nonlocal turns
            while True:
                await asyncio.sleep(0)
                turns += 1

        woken_at: list[tuple[int, int]] = []  # (turns since the push, tails pending)
        wake = router._held.wake

        def recording_wake(moved: list[str]) -> None:
            woken_at.append((turns, len(router._unfolded)))
            wake(moved)

        monkeypatch.setattr(router._held, "wake", recording_wake)
        counter = asyncio.create_task(count_turns())
        await router.publish([OutMessage(topic=t, body=f"new {t}") for t in topics])
        turns = 0
        assert router._unfolded  # not built in the commit
        answers = await asyncio.wait_for(asyncio.gather(*reads), 10)
        counter.cancel()
        assert answers == [[f"new {t}"] for t in topics]
        assert turns_with_tails_pending == [0] * len(topics)
        assert len(woken_at) == 1
        assert woken_at[0][1] == 0  # woken with the tails complete ...
        assert woken_at[0][0] >= len(topics) // 2 - 1  # ... built 2 topics a turn
        assert router.held_reads == 0
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


@asynccontextmanager
async def _store_url(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    """A SQLite file's URL, or a fresh PostgreSQL database's (a store replicas share)."""
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'db'}"
        return
    async with postgres_database() as url:
        yield url


def _after_the_first_empty_read(
    monkeypatch: pytest.MonkeyPatch, store: Store, then: Callable[[], Awaitable[None]]
) -> None:
    """Run ``then`` right after the first read of messages from the store that finds none
    (a claimed read on a shared store, a plain one on a store of one process), before the
    router goes on with what it found.
    """
    done: list[bool] = []
    claim_read = GroupClaim.read
    messages = store.topics.messages

    async def after(rows: list[tuple[int, str]]) -> list[tuple[int, str]]:
        if not rows and not done:
            done.append(True)
            await then()
        return rows

    async def read(self: GroupClaim, limit: int) -> list[tuple[int, str]]:
        return await after(await claim_read(self, limit))

    async def read_store(topic: str, after_seq: int, limit: int) -> list[tuple[int, str]]:
        return await after(await messages(topic, after_seq, limit))

    monkeypatch.setattr(GroupClaim, "read", read)
    monkeypatch.setattr(store.topics, "messages", read_store)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_a_commit_after_a_read_that_found_nothing_is_delivered(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message committed while a read finds none of its group's unread messages left (they
    expired) is delivered to that read: the group moves past what expired, not past it.
    """
    async with _store_url(kind, tmp_path) as url:
        router, store = await _open(url, retention=0.2)
        try:
            await router.publish([OutMessage(topic="t", body="1")])
            async with await router.read("t", "g", "c", timeout=0, limit=10) as delivery:
                assert list(delivery.messages) == ["1"]
                await delivery.ack()
            await router.publish([OutMessage(topic="t", body="2")])
            published = now_ms()
            await wait_for(lambda: now_ms() - published > 300, timeout=5)
            assert await router.maintain() == (2, 0)  # "2" unread, and gone

            async def commit_another() -> None:
                await router.publish([OutMessage(topic="t", body="3")])

            _after_the_first_empty_read(monkeypatch, store, commit_another)
            async with await router.read("t", "g", "c", timeout=5, limit=10) as delivery:
                assert list(delivery.messages) == ["3"]
                await delivery.ack()
            # The group then stands at "3", the last message: nothing is delivered again.
            async with await router.read("t", "g", "c", timeout=0, limit=10) as delivery:
                assert list(delivery.messages) == []
        finally:
            await _close(router, store)


async def test_a_commit_after_a_replica_read_that_found_nothing_is_delivered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a shared store, a message committed while a replica's read finds nothing (another
    replica consumed the group's messages since this one last read) is delivered to that
    read, and only to it.
    """
    async with postgres_database() as url:
        mine, my_store = await _open(url)
        theirs, their_store = await _open(url)
        try:
            await mine.publish([OutMessage(topic="t", body="1")])
            async with await mine.read("t", "g", "c", timeout=0, limit=10) as delivery:
                await delivery.ack()
            await mine.publish([OutMessage(topic="t", body="2")])
            async with await theirs.read("t", "g", "c", timeout=5, limit=10) as delivery:
                assert list(delivery.messages) == ["2"]
                await delivery.ack()

            async def commit_another() -> None:
                await mine.publish([OutMessage(topic="t", body="3")])

            _after_the_first_empty_read(monkeypatch, my_store, commit_another)
            async with await mine.read("t", "g", "c", timeout=5, limit=10) as delivery:
                assert list(delivery.messages) == ["3"]
                await delivery.ack()
            await wait_for(lambda: theirs._heads.get("t") == 3)  # told of "3"
            async with await theirs.read("t", "g", "c", timeout=0, limit=10) as delivery:
                assert list(delivery.messages) == []
        finally:
            await _close(mine, my_store)
            await _close(theirs, their_store)


async def test_a_commit_after_a_read_that_waited_for_the_groups_last_delivery_is_delivered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a shared store, a message committed while a read finds nothing, after it waited for
    the group's open delivery (a long-poll sent again before the answer to the last one was
    acknowledged), is delivered to that read.
    """
    async with postgres_database() as url:
        router, store = await _open(url)
        try:
            await router.publish([OutMessage(topic="t", body="1")])
            first = await router.read("t", "g", "c", timeout=0, limit=10)
            assert list(first.messages) == ["1"]
            state = await router._positions.get("t", "g")
            second = asyncio.create_task(router.read("t", "g", "c", timeout=5, limit=10))
            await wait_for(lambda: bool(state.lock._waiters))

            async def commit_another() -> None:
                await router.publish([OutMessage(topic="t", body="2")])

            _after_the_first_empty_read(monkeypatch, store, commit_another)
            await first.ack()
            async with await second as delivery:
                assert list(delivery.messages) == ["2"]
                await delivery.ack()
        finally:
            await _close(router, store)


async def test_groups_maintenance_drops_are_forgotten_in_memory(tmp_path: Path) -> None:
    """Maintenance that drops the consumer groups of a topic with no message and no
    subscription left has the router forget that topic's head and groups too; a later read
    of it starts from its head in the store, past every offset handed out before.
    """
    router, store = await _open(tmp_path / "db", retention=0.2, snapshots_of_subscriptions=True)
    try:
        await router.publish([OutMessage(topic="t", body='{"n":1}')])
        async with await router.read("t", "g", "c", timeout=0, limit=10) as delivery:
            await delivery.ack()

        async def saved() -> bool:
            return await store.positions.group("t", "g") is not None

        await wait_for(saved, timeout=5)
        published = now_ms()
        await wait_for(lambda: now_ms() - published > 300, timeout=5)
        await router.maintain()
        assert await store.positions.group("t", "g") is None
        assert list(router._positions.states()) == []
        assert "t" not in router._heads and "t" not in router._tails
        await router.publish([OutMessage(topic="t", body='{"n":2}')])
        async with await router.read("t", "g", "c", timeout=0, limit=10) as delivery:
            assert list(delivery.messages) == ['{"n":2}']
    finally:
        await _close(router, store)


def _no_fold_at_once() -> None:
    raise AssertionError("folded every pending append in one event-loop turn")


async def test_maintenance_folds_pending_appends_in_slices_before_trimming(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appends no read has looked at yet wait to be folded into the tails; maintenance that
    drops messages has them folded in slices (the event loop running between), never all in
    one turn, and then trims: no tail holds a message the store dropped.
    """
    monkeypatch.setattr(embedded, "FOLD_STEP", 2)
    monkeypatch.setattr(slices, "SLICE_SECONDS", 0.0)
    router, store = await _open(tmp_path / "db", retention=0.001)
    topics = [f"t{n}" for n in range(20)]
    try:
        await router.publish([OutMessage(topic=t, body=f"{t} 1") for t in topics])
        await asyncio.sleep(0.01)  # older than the retention
        await router.publish([OutMessage(topic=t, body=f"{t} 2") for t in topics[:10]])
        assert router._unfolded  # no read has looked yet
        monkeypatch.setattr(router, "_fold", _no_fold_at_once)
        expired, _ = await router.maintain()
        assert expired >= 20
        assert not router._unfolded
        kept = {(t, seq) for t, tail in router._tails.items() for seq, _ in tail}
        stored = {(t, seq) for t in topics for seq, _ in await store.topics.messages(t, 0, 10)}
        assert kept <= stored
    finally:
        await _close(router, store)


async def test_a_topic_dropped_while_appends_wait_to_be_folded_is_forgotten_after_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store dropped a topic (its last subscription left) while a commit's appends to it
    wait to be folded into the tails: the router forgets it once they are folded, in slices,
    and no tail of it comes back.
    """
    monkeypatch.setattr(embedded, "FOLD_STEP", 2)
    monkeypatch.setattr(slices, "SLICE_SECONDS", 0.0)
    router, store = await _open(tmp_path / "db")
    others = [f"o{n}" for n in range(20)]
    try:
        await router.publish([OutMessage(topic="t", body="t1")])
        async with await router.read("t", "g", "c", timeout=0, limit=10) as delivery:
            await delivery.ack()
        await router.publish([OutMessage(topic=t, body="x") for t in ["t", *others]])
        assert router._unfolded
        monkeypatch.setattr(router, "_fold", _no_fold_at_once)
        router.forget_topics(["t"])
        assert "t" in router._forgettable  # kept until the appends are folded
        await wait_for(lambda: not router._unfolded and not router._forgettable, timeout=5)
        assert "t" not in router._heads and "t" not in router._tails
        assert [s.topic for s in router._positions.states()] == []
        assert set(router._tails) == set(others)
    finally:
        await _close(router, store)


async def _subscribe(router: EmbeddedRouter, subscriber: str, topic: str, revision: int) -> None:
    """Write a subscription on ``topic`` and append its snapshot there, as a subscribe or a
    push does.
    """
    outlet = InStoreOutlet(router)
    at = now_ms()
    async with router._store.write() as tx:
        await tx.put_subscription(
            SubscriptionRow(subscriber, topic, "{}", revision, at, at, None, None)
        )
        written = await outlet.write(tx, [_snapshot(topic, subscriber, revision)], at)
    outlet.after_commit(written)


async def _unsubscribe(router: EmbeddedRouter, subscriber: str, topic: str, revision: int) -> None:
    """Delete the subscription, as an unsubscribe does."""
    outlet = InStoreOutlet(router)
    at = now_ms()
    async with router._store.write() as tx:
        await tx.delete_subscription(subscriber, revision, at)
        emptied = await outlet.left(tx, subscriber, topic)
    if emptied:
        outlet.emptied([topic])


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_a_topic_its_last_subscription_left_goes_and_comes_back_above_its_offsets(
    kind: str, tmp_path: Path
) -> None:
    """Maintenance drops the row of a topic whose last subscription left, raising the store's
    offset floor to its last offset; the topic made again starts above it, and a group's lag
    there counts its messages, not the floor. A DMaaP client's topic keeps its row.
    """
    async with _store_url(kind, tmp_path) as url:
        router, store = await _open(url, snapshots_of_subscriptions=True)
        try:
            for revision in (1, 2, 3):
                await _subscribe(router, "s", "t", revision)
            async with await router.read("t", "g", "c", timeout=0, limit=10) as delivery:
                assert len(delivery.messages) == 3
                await delivery.ack()
            await router.publish([OutMessage(topic="d", body="{}")])
            await _unsubscribe(router, "s", "t", 4)
            assert await store.topics.get("t") is not None  # until maintenance
            await router.maintain()
            assert await store.topics.get("t") is None
            assert await store.topics.offset_floor() == 3
            assert await router.topics() == ["d"]
            with pytest.raises(NotFound):
                await router.read("t", "g", "c", timeout=0, limit=10)

            await _subscribe(router, "s2", "t", 5)
            await router.publish([OutMessage(topic="t", body="{}")])
            row = await store.topics.get("t")
            assert row is not None and (row.base_offset, row.last_offset) == (3, 5)
            assert await router.lags(["t"]) == {"t": 2}  # no group yet: its messages
            # A group at a position from before the row went (saved late, or held in memory).
            await store.positions.save([GroupRow("t", "old", 1, None)])
            router._positions.merge("t", "old", 1, None)
            async with await router.read("t", "new", "c", timeout=0, limit=10) as delivery:
                assert [seq for seq, _ in await store.topics.messages("t", 0, 10)] == [4, 5]
                assert len(delivery.messages) == 2
                assert await router.lags(["t"]) == {"t": 2}
                stats = await router.stats("t")
                assert {g.name: g.lag for g in stats.consumer_groups}["old"] == 2
                await delivery.ack()
            lags = {g.name: g.lag for g in (await router.stats("t")).consumer_groups}
            assert lags == {"new": 0, "old": 2}
        finally:
            await _close(router, store)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_topics_a_dmaap_client_publishes_to_keep_their_rows(
    kind: str, tmp_path: Path
) -> None:
    """A topic published to without a subscription, or published to after its last
    subscription left, keeps its row once its messages expired and its groups went; a poll
    of it answers nothing, not an unknown topic.
    """
    async with _store_url(kind, tmp_path) as url:
        router, store = await _open(url, retention=0.2, snapshots_of_subscriptions=True)
        try:
            await router.publish([OutMessage(topic="d", body="{}")])
            async with await router.read("d", "g", "c", timeout=0, limit=10) as delivery:
                await delivery.ack()
            await _subscribe(router, "s", "u", 1)
            await _unsubscribe(router, "s", "u", 2)
            await router.publish([OutMessage(topic="u", body="{}")])
            published = now_ms()
            await wait_for(lambda: now_ms() - published > 300, timeout=5)
            await router.maintain()
            assert await store.topics.counts(["d", "u"]) == {}  # expired
            assert await store.positions.all_groups() == []
            assert await router.topics() == ["d", "u"]
            assert await store.topics.offset_floor() == 0
            for topic in ("d", "u"):
                async with await router.read(topic, "g", "c", timeout=0, limit=10) as delivery:
                    assert list(delivery.messages) == []
        finally:
            await _close(router, store)


async def test_a_held_read_in_another_replica_is_woken_by_a_topic_made_again() -> None:
    """On a shared store, a replica holding a read on a topic, with the topic's old head,
    while another replica drops the topic's row and the topic is made again, is woken by the
    first commit to it and gets the new message: the new offsets start above the old head.
    """
    async with postgres_database() as url:
        mine, my_store = await _open(url, snapshots_of_subscriptions=True)
        theirs, their_store = await _open(url)
        try:
            for revision in (1, 2, 3):
                await _subscribe(mine, "s", "t", revision)
            await wait_for(lambda: theirs._heads.get("t") == 3)
            async with await theirs.read("t", "g", "c", timeout=0, limit=10) as delivery:
                assert len(delivery.messages) == 3
                await delivery.ack()
            held = asyncio.create_task(theirs.read("t", "g", "c", timeout=5, limit=10))
            await wait_for(lambda: theirs.held_reads == 1)
            await _unsubscribe(mine, "s", "t", 4)
            await mine.maintain()
            assert await my_store.topics.get("t") is None
            assert theirs._heads["t"] == 3  # it still holds the old head
            await mine.publish([OutMessage(topic="t", body="again")])
            async with await held as delivery:
                assert list(delivery.messages) == ["again"]
                await delivery.ack()
            group = await their_store.positions.group("t", "g")
            assert group is not None and group.position == 4
        finally:
            await _close(mine, my_store)
            await _close(theirs, their_store)


async def test_a_replica_that_did_not_drop_a_topic_forgets_it_at_maintenance_cadence() -> None:
    """On a shared store, a replica that neither ran the unsubscribe nor leads maintenance
    still forgets the head and the groups of a topic the store dropped, at maintenance's
    cadence, and keeps those of the topics in use.
    """
    async with postgres_database() as url:
        mine, my_store = await _open(url, snapshots_of_subscriptions=True)
        # Maintenance is led elsewhere: this lock keeps the other replica from leading it.
        lock = LeaderLock(my_store, "topic retention and compaction")
        assert await lock.acquire()
        theirs, their_store = await _open(url, snapshots_of_subscriptions=True, maintenance=0.1)
        try:
            await _subscribe(mine, "s", "t", 1)
            await _subscribe(mine, "k", "kept", 2)
            for topic in ("t", "kept"):
                async with await theirs.read(topic, "g", "c", timeout=5, limit=10) as delivery:
                    assert len(delivery.messages) == 1
                    await delivery.ack()
            await _unsubscribe(mine, "s", "t", 3)
            await mine.maintain()
            assert await my_store.topics.get("t") is None

            def forgotten() -> bool:
                return "t" not in theirs._heads and theirs._positions.topics() == ["kept"]

            await wait_for(forgotten, timeout=5)
            assert not theirs._maintenance.leading
            assert "kept" in theirs._heads
        finally:
            await lock.release()
            await _close(mine, my_store)
            await _close(theirs, their_store)


async def test_a_read_held_through_the_drop_of_its_topic_is_woken_by_the_topic_made_again(
    tmp_path: Path,
) -> None:
    """On a store of one process, a read held on a topic while maintenance drops its row
    keeps the old head, and is woken by the first commit to the topic made again.
    """
    router, store = await _open(tmp_path / "db", snapshots_of_subscriptions=True)
    try:
        for revision in (1, 2, 3):
            await _subscribe(router, "s", "t", revision)
        async with await router.read("t", "g", "c", timeout=0, limit=10) as delivery:
            await delivery.ack()
        held = asyncio.create_task(router.read("t", "g", "c", timeout=5, limit=10))
        await wait_for(lambda: router.held_reads == 1)
        await _unsubscribe(router, "s", "t", 4)
        await router.maintain()
        assert await store.topics.get("t") is None
        await router.publish([OutMessage(topic="t", body="again")])
        async with await held as delivery:
            assert list(delivery.messages) == ["again"]
    finally:
        await _close(router, store)


async def test_a_claim_whose_session_was_ended_is_released_quietly_and_delivered_again() -> None:
    """On a shared store, a delivery held open past the idle-in-transaction timeout (its
    replica frozen while answering) loses its claim: PostgreSQL ends the session, releasing
    the delivery raises nothing, acknowledging it fails, and the group gets its messages again.
    """
    async with postgres_database() as url:
        router, store = await _open(url, timeouts=SessionTimeouts(idle_transaction=0.5))
        try:
            await router.publish([OutMessage(topic="t", body="1")])
            for end in ("release", "ack"):
                async with await router.read("t", "g", "c", timeout=0, limit=10) as delivery:
                    assert list(delivery.messages) == ["1"]
                    await asyncio.sleep(1.5)  # idle in its transaction: the session is ended
                    if end == "ack":
                        with pytest.raises(StoreUnavailable):
                            await delivery.ack()
            async with await router.read("t", "g", "c", timeout=0, limit=10) as delivery:
                assert list(delivery.messages) == ["1"]
                await delivery.ack()
        finally:
            await _close(router, store)
