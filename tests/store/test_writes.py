"""The bulk writes of a change: topic offsets, messages, the outbox and published marks, on
SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import insert, select

from policy_pubsub.config import Settings
from policy_pubsub.exceptions import StoreUnavailable
from policy_pubsub.routers import OutMessage
from policy_pubsub.store import Store, SubscriptionRow
from policy_pubsub.store.notify import REVISION_CHANNEL, TOPICS_CHANNEL
from policy_pubsub.store.tables import (
    change_log,
    messages,
    subscription_marks,
    subscriptions,
    topics,
)
from tests.conftest import wait_for


async def _messages(store: Store) -> dict[str, list[tuple[int, str | None, int | None, str, int]]]:
    """Every message, by topic, in offset order: (seq, key, revision, body, created_at)."""
    found: dict[str, list[tuple[int, str | None, int | None, str, int]]] = {}
    async with store.read() as conn:
        result = await conn.execute(
            select(
                messages.c.topic,
                messages.c.seq,
                messages.c.key,
                messages.c.revision,
                messages.c.body,
                messages.c.created_at,
            ).order_by(messages.c.topic, messages.c.seq)
        )
        for topic, seq, key, revision, body, created_at in result:
            found.setdefault(topic, []).append((seq, key, revision, body, created_at))
    return found


async def _topics(store: Store) -> dict[str, tuple[int, int, int | None]]:
    """name -> (last_offset, created_at, last_published_at)"""
    async with store.read() as conn:
        result = await conn.execute(select(topics))
        return {
            row.name: (row.last_offset, row.created_at, row.last_published_at) for row in result
        }


# Names whose code-point order differs from most collations' order.
AWKWARD = ["b", "B", "a.b", "a-b", "a_b", "Z", "_z", "-a", "0", "a"]


async def test_append_numbers_each_topics_messages_in_order(store: Store) -> None:
    """Several messages for one topic in one append get consecutive offsets in batch order,
    new topics start at 1, and existing topics (empty or not) continue after their head.
    """
    async with store.write() as tx:
        await tx.create_topics(["empty"], 100)
        assert await tx.append([OutMessage("older", "o1"), OutMessage("older", "o2")], 200) == {
            "older": 2
        }
    batch = [
        OutMessage(topic, f"{topic}/{i}", key=f"k{i}", revision=7)
        for i in range(5)
        for topic in ("older", *AWKWARD, "empty")
    ]
    async with store.write() as tx:
        heads = await tx.append(batch, 300)
    assert heads == {"older": 7, "empty": 5, **{name: 5 for name in AWKWARD}}
    assert list(heads) == sorted(heads)
    found = await _messages(store)
    assert found["older"] == [
        (1, None, None, "o1", 200),
        (2, None, None, "o2", 200),
        *((3 + i, f"k{i}", 7, f"older/{i}", 300) for i in range(5)),
    ]
    for name in (*AWKWARD, "empty"):
        assert found[name] == [(1 + i, f"k{i}", 7, f"{name}/{i}", 300) for i in range(5)]
    rows = await _topics(store)
    assert rows["empty"] == (5, 100, 300)
    assert rows["older"] == (7, 200, 300)
    assert all(rows[name] == (5, 300, 300) for name in AWKWARD)


async def test_append_to_thousands_of_topics_continues_each_one(store: Store) -> None:
    """A push to thousands of topics (most existing, some new, some with two messages)
    advances every one of them from its own head, and nothing else.
    """
    names = [f"t-{i}" for i in range(3000)]
    async with store.write() as tx:
        await tx.append([OutMessage(name, "first") for name in names[:2500]], 1)
        await tx.append([OutMessage(name, "second") for name in names[:2000:2]], 2)
    batch = [OutMessage(name, f"{name}:a") for name in reversed(names)]
    batch += [OutMessage(name, f"{name}:b") for name in names[::3]]
    async with store.write() as tx:
        heads = await tx.append(batch, 3)
    expected: dict[str, int] = {}
    for i, name in enumerate(names):
        before = (1 if i < 2500 else 0) + (1 if i < 2000 and i % 2 == 0 else 0)
        expected[name] = before + 1 + (1 if i % 3 == 0 else 0)
    assert heads == expected
    found = await _messages(store)
    rows = await _topics(store)
    for i, name in enumerate(names):
        seqs = [seq for seq, *_ in found[name]]
        assert seqs == list(range(1, expected[name] + 1)), name
        tail = [f"{name}:a"] + ([f"{name}:b"] if i % 3 == 0 else [])
        assert [row[3] for row in found[name][-len(tail) :]] == tail, name
        assert rows[name][0] == expected[name]


async def test_a_failed_append_leaves_nothing_and_the_store_works_on(store: Store) -> None:
    """When the messages cannot be written (here: an offset already taken), the store
    reports itself unavailable, the transaction leaves no trace, and the next one works.
    """
    async with store.write() as tx:
        await tx.create_topics(["taken"], 1)
        await tx.conn.execute(
            insert(messages).values(topic="taken", seq=1, body="squatter", created_at=1)
        )
    with pytest.raises(StoreUnavailable):
        async with store.write() as tx:
            await tx.append([OutMessage("fresh", "f"), OutMessage("taken", "t")], 2)
    assert await _topics(store) == {"taken": (0, 1, None)}
    assert await _messages(store) == {"taken": [(1, None, None, "squatter", 1)]}
    async with store.write() as tx:
        assert await tx.append([OutMessage("fresh", "f")], 3) == {"fresh": 1}
    assert (await _messages(store))["fresh"] == [(1, None, None, "f", 3)]


async def test_concurrent_appends_to_the_same_topics_all_commit(store: Store) -> None:
    """Writers appending to the same existing topics, listed in different orders, wait for
    each other (no deadlock) and never take the same offset.
    """
    if not store.shared:
        pytest.skip("SQLite has one writer at a time")
    names = [f"c-{i}" for i in range(1500)] + AWKWARD
    async with store.write() as tx:
        await tx.append([OutMessage(name, "w") for name in names], 1)

    async def push(tag: str, order: list[str]) -> None:
        async with store.write() as tx:
            await tx.append([OutMessage(name, tag) for name in order], 2)

    await asyncio.gather(
        push("x", names), push("y", names[::-1]), push("z", names[500:] + names[:500])
    )
    found = await _messages(store)
    for name in names:
        assert [row[0] for row in found[name]] == [1, 2, 3, 4]
        assert sorted(row[3] for row in found[name]) == ["w", "x", "y", "z"]


async def test_outbox_keeps_each_batch_in_order(store: Store) -> None:
    """Messages queued for the relay come back in the order written, with every field."""
    first = [
        OutMessage(f"t{i % 7}", f"body {i}", key=f"s{i}", revision=i, dedup_id=f"s{i}@{i}")
        for i in range(1200)
    ]
    second = [OutMessage("plain", "no key")]
    async with store.write() as tx:
        await tx.outbox_add(first, 10)
    async with store.write() as tx:
        await tx.outbox_add([], 11)
        await tx.outbox_add(second, 11)
    queued = await store.outbox.batch(5000)
    assert [message for _, message in queued] == first + second
    ids = [ident for ident, _ in queued]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert await store.outbox.stats() == (1201, 10)


async def test_outbox_rows_written_first_in_a_transaction_roll_back_with_it(
    store: Store,
) -> None:
    """Queued messages belong to the change's transaction even when they are its first
    statement: if the change fails, they are gone with it.
    """

    class Failed(Exception):
        pass

    with pytest.raises(Failed):
        async with store.write() as tx:
            await tx.outbox_add([OutMessage("t", "b")], 1)
            raise Failed
    assert await store.outbox.stats() == (0, None)


async def test_mark_published_marks_exactly_the_given_subscribers(store: Store) -> None:
    """Thousands of subscribers at once; the others, and unknown ids, are left alone."""
    async with store.write() as tx:
        await tx.put_subscription(SubscriptionRow("s-0", "t-0", "{}", 1, 1, 1, None, None))
        await tx.conn.execute(
            insert(subscriptions),
            [
                {
                    "subscriber_id": f"s-{i}",
                    "topic": f"t-{i}",
                    "body": "{}",
                    "revision": 1,
                    "created_at": 1,
                    "updated_at": 1,
                }
                for i in range(1, 2500)
            ],
        )
        await tx.mark_published([f"s-{i}" for i in range(0, 2500, 2)] + ["missing"], 5, 50)
        await tx.mark_published([], 6, 60)
        await tx.mark_published(["s-1"], 6, 60)
    loaded = (await store.state.load()).subscriptions
    marks: dict[str, Any] = {
        s.subscriber_id: (s.last_revision, s.last_published_at) for s in loaded
    }
    assert len(marks) == 2500
    for i in range(2500):
        want = (5, 50) if i % 2 == 0 else (6, 60) if i == 1 else (None, None)
        assert marks[f"s-{i}"] == want, i
    stored = await _marks(store)
    assert "missing" not in stored
    assert {sid for sid, mark in stored.items() if mark != (None, None)} == {
        sid for sid, mark in marks.items() if mark != (None, None)
    }


async def _marks(store: Store) -> dict[str, tuple[int | None, int | None]]:
    """The subscription_marks table: subscriber id -> (last_revision, last_published_at)."""
    async with store.read() as conn:
        result = await conn.execute(select(subscription_marks))
        return {sid: (revision, at) for sid, revision, at in result}


def _row(subscriber_id: str, revision: int = 1) -> SubscriptionRow:
    return SubscriptionRow(subscriber_id, f"t-{subscriber_id}", "{}", revision, 1, 1, None, None)


async def test_marks_survive_a_restart(settings: Settings) -> None:
    """Marks are stored: a store opened again loads them with their subscriptions."""
    store = Store(settings.database_url)
    await store.open()
    try:
        async with store.write() as tx:
            for sid in ("a", "b", "c"):
                await tx.put_subscription(_row(sid))
            await tx.mark_published(["a", "b"], 7, 70)
            await tx.mark_published(["b"], 8, 80)
    finally:
        await store.close()
    store = Store(settings.database_url)
    await store.open()
    try:
        loaded = {s.subscriber_id: s for s in (await store.state.load()).subscriptions}
    finally:
        await store.close()
    assert {sid: (s.last_revision, s.last_published_at) for sid, s in loaded.items()} == {
        "a": (7, 70),
        "b": (8, 80),
        "c": (None, None),
    }
    assert loaded["b"] == SubscriptionRow("b", "t-b", "{}", 1, 1, 1, 8, 80)


async def test_updating_a_subscription_keeps_its_mark(store: Store) -> None:
    """put_subscription of an existing subscription changes its record, not its mark."""
    async with store.write() as tx:
        await tx.put_subscription(_row("a"))
        await tx.mark_published(["a"], 3, 30)
    async with store.write() as tx:
        await tx.put_subscription(SubscriptionRow("a", "t-new", "{}", 4, 1, 40, 9, 90))
    (loaded,) = (await store.state.load()).subscriptions
    assert loaded == SubscriptionRow("a", "t-new", "{}", 4, 1, 40, 3, 30)


async def test_a_new_subscription_gets_the_mark_it_is_written_with(store: Store) -> None:
    async with store.write() as tx:
        await tx.put_subscription(SubscriptionRow("a", "t", "{}", 4, 1, 1, 4, 40))
    assert await _marks(store) == {"a": (4, 40)}
    (loaded,) = (await store.state.load()).subscriptions
    assert (loaded.last_revision, loaded.last_published_at) == (4, 40)


async def test_deleting_a_subscription_deletes_its_mark(store: Store) -> None:
    """The mark goes with the subscription; one created again under that id starts clean."""
    async with store.write() as tx:
        await tx.put_subscription(_row("a"))
        await tx.put_subscription(_row("b"))
        await tx.mark_published(["a", "b"], 5, 50)
    async with store.write() as tx:
        await tx.delete_subscription("a", 6, 60)
    assert await _marks(store) == {"b": (5, 50)}
    assert [s.subscriber_id for s in (await store.state.load()).subscriptions] == ["b"]
    async with store.write() as tx:
        await tx.put_subscription(_row("a", revision=6))
    loaded = {s.subscriber_id: s for s in (await store.state.load()).subscriptions}
    assert (loaded["a"].last_revision, loaded["a"].last_published_at) == (None, None)
    assert (loaded["b"].last_revision, loaded["b"].last_published_at) == (5, 50)


async def test_offsets_are_announced_in_order_once_committed(store: Store) -> None:
    """On a shared store, every topic's new head is announced after the commit, in name
    order, however many notifications it takes.
    """
    if store.notifications is None:
        pytest.skip("a SQLite store is not shared")
    heard: list[str] = []
    store.notifications.on(TOPICS_CHANNEL, heard.append)
    await wait_for(lambda: store.notifications is not None and store.notifications.connected)
    names = [f"announced-topic-{i:05d}" for i in range(2000)]
    async with store.write() as tx:
        heads = await tx.append([OutMessage(name, "b") for name in names[::-1]], 1)
    await wait_for(lambda: sum(len(h.split(",")) for h in heard) >= len(names))
    assert len(heard) > 1
    assert ",".join(heard).split(",") == [f"{name}:{heads[name]}" for name in names]


async def test_subscribe_writes_the_rows_their_marks_and_the_change_log(store: Store) -> None:
    """One call writes new and existing subscriptions (an update keeps its creation time as
    the row gives it), each one's mark as its row says, and on a shared store a change log
    entry for each (a SQLite store keeps no change log).
    """
    async with store.write() as tx:
        await tx.put_subscription(_row("a"))
        await tx.mark_published(["a"], 1, 10)
    async with store.write() as tx:
        await tx.subscribe(
            [
                SubscriptionRow("a", "t-moved", '{"x":1}', 5, 1, 50, 5, 50),
                SubscriptionRow("b", "t-b", '{"x":2}', 6, 50, 50, 6, 50),
            ]
        )
    loaded = {s.subscriber_id: s for s in (await store.state.load()).subscriptions}
    assert loaded == {
        "a": SubscriptionRow("a", "t-moved", '{"x":1}', 5, 1, 50, 5, 50),
        "b": SubscriptionRow("b", "t-b", '{"x":2}', 6, 50, 50, 6, 50),
    }
    async with store.read() as conn:
        logged = set(await conn.execute(select(change_log).where(change_log.c.revision > 1)))
    assert logged == ({(5, "s", "a", 50), (6, "s", "b", 50)} if store.shared else set())


async def test_a_transaction_announces_the_revision_it_committed_once(store: Store) -> None:
    """Revisions taken several at a time and partly handed back are announced once, as the
    revision committed, with the topics' heads, at the commit; a rolled back transaction
    announces nothing.
    """
    if store.notifications is None:
        pytest.skip("a SQLite store is not shared")
    revisions: list[str] = []
    heads: list[str] = []
    store.notifications.on(REVISION_CHANNEL, revisions.append)
    store.notifications.on(TOPICS_CHANNEL, heads.append)
    await wait_for(lambda: store.notifications is not None and store.notifications.connected)
    async with store.write() as tx:
        first = await tx.next_revision(3)
        await tx.advance_revision(first + 1)
        await tx.append([OutMessage("announced", "b")], 1)
    async with store.write() as tx:
        await tx.next_revision(2)
        await tx.append([OutMessage("announced", "c")], 1)
        await tx.rollback()
    async with store.write() as tx:
        last = await tx.next_revision()
    assert last == first + 2 == await store.state.revision()
    await wait_for(lambda: len(revisions) == 2)
    assert revisions == [str(first + 1), str(last)]
    assert heads == ["announced:1"]
