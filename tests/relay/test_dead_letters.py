"""A message the router refuses for good leaves the outbox for the dead letters, and the
relay goes on: on SQLite and PostgreSQL, with a router that refuses chosen subscribers, and
once with the real JetStream refusing a message for its size.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import nats
import pytest

from policy_pubsub.exceptions import MessageRefused
from policy_pubsub.relay import OutboxRelay, dead_letter_retention
from policy_pubsub.routers import OutMessage
from policy_pubsub.store import Store, SubscriptionRow, now_ms
from tests.conftest import postgres_database, wait_for
from tests.nats_server import NATS_URL, open_nats_router, stream_info
from tests.relay.helpers import snapshot
from tests.relay.test_pipeline import FakeRouter


class RefusingRouter(FakeRouter):
    """Takes messages in order, and refuses for good those of the subscribers in ``refuse``
    (everything before the refused one is taken, nothing after it).
    """

    def __init__(self, refuse: set[str]) -> None:
        self.refuse = refuse
        self.calls: list[list[str]] = []  # dedup ids handed over, per call
        self.taken: list[str] = []

    async def publish(self, batch: Sequence[OutMessage]) -> None:
        self.calls.append([m.dedup_id or "" for m in batch])
        for message in batch:
            if message.key in self.refuse:
                raise MessageRefused(message, f"message router answered 413: {message.key}")
            self.taken.append(message.dedup_id or "")


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        opened = Store(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
        await opened.open()
        yield opened
        await opened.close()
        return
    async with postgres_database() as url:
        opened = Store(url)
        await opened.open()
        yield opened
        await opened.close()


async def _outbox(store: Store, *messages: OutMessage) -> None:
    async with store.write() as tx:
        await tx.outbox_add(messages, 0)


async def test_a_refused_message_mid_batch_becomes_one_dead_letter_and_the_rest_go_on(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """The router takes s1, refuses s2 (whose older snapshot in the batch it stands for too):
    in one step s2's rows leave the outbox for one dead letter and s1's are deleted; the relay
    goes on with s3 and s4, logs the refusal once at ERROR and counts it.
    """
    await _outbox(store, snapshot(2, 1), snapshot(1, 1), snapshot(2, 2))
    await _outbox(store, snapshot(3, 2), snapshot(4, 2))
    router = RefusingRouter({"s2"})
    relay = OutboxRelay(store, router)
    with caplog.at_level(logging.INFO, logger="policy_pubsub.relay"):
        moved = await relay.relay_pending()
    assert moved == 5
    assert router.calls == [["s1@1", "s2@2", "s3@2", "s4@2"], ["s3@2", "s4@2"]]
    assert router.taken == ["s1@1", "s3@2", "s4@2"]
    assert await store.outbox.stats() == (0, None)
    [letter] = await store.dead_letters.listing()
    refused = snapshot(2, 2)
    assert (letter.subscriber_id, letter.topic, letter.revision, letter.dedup_id) == (
        "s2",
        refused.topic,
        2,
        "s2@2",
    )
    assert letter.size == len(refused.body.encode())
    assert letter.reason == "message router answered 413: s2"
    assert letter.superseded_by is None
    assert await store.dead_letters.figures() == (1, 1)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    text = errors[0].getMessage()
    for part in ("s2", refused.topic, "revision 2", f"{letter.size} bytes", "413"):
        assert part in text
    assert relay.published == 3


async def test_every_refused_message_of_a_batch_is_a_dead_letter_of_its_own(
    store: Store,
) -> None:
    """Two subscribers refused in one batch: two dead letters, every other message taken,
    the outbox empty, the counter at 2.
    """
    await _outbox(store, *(snapshot(i, 1) for i in range(1, 6)))
    router = RefusingRouter({"s2", "s4"})
    await OutboxRelay(store, router).relay_pending()
    assert router.taken == ["s1@1", "s3@1", "s5@1"]
    assert [d.dedup_id for d in await store.dead_letters.listing()] == ["s2@1", "s4@1"]
    assert await store.outbox.stats() == (0, None)
    assert (await store.dead_letters.figures())[0] == 2


async def test_the_subscribers_next_delivered_snapshot_supersedes_its_dead_letter(
    store: Store,
) -> None:
    """A dead letter stays open until the router takes a newer snapshot of that subscriber;
    then it records that revision, and the subscriber is no longer among the open ones.
    """
    await _outbox(store, snapshot(1, 1), snapshot(2, 1))
    router = RefusingRouter({"s2"})
    relay = OutboxRelay(store, router)
    await relay.relay_pending()
    assert await store.dead_letters.open_subscribers() == {"s2"}
    router.refuse.clear()
    await _outbox(store, snapshot(1, 2))
    await relay.relay_pending()
    assert await store.dead_letters.open_subscribers() == {"s2"}  # s1's snapshot: no matter
    await _outbox(store, snapshot(2, 3))
    await relay.relay_pending()
    [letter] = await store.dead_letters.listing()
    assert letter.superseded_by == 3
    assert await store.dead_letters.open_subscribers() == set()
    assert await store.dead_letters.figures() == (1, 1)  # superseded, still listed


async def test_the_dead_letter_count_survives_their_removal(store: Store) -> None:
    """Pruning dead letters older than a time removes them, and not the count ever made."""
    await _outbox(store, snapshot(1, 1))
    await OutboxRelay(store, RefusingRouter({"s1"})).relay_pending()
    [letter] = await store.dead_letters.listing()
    assert await store.dead_letters.prune(letter.refused_at) == 0
    assert await store.dead_letters.prune(letter.refused_at + 1) == 1
    assert await store.dead_letters.figures() == (1, 0)


async def test_only_open_dead_letters_of_existing_subscriptions_hold_up_delivery(
    store: Store,
) -> None:
    """``undelivered`` (what /healthcheck reads) lists the open dead letters whose subscription
    still exists; removing a subscriber's dead letters (a retry) takes them all.
    """
    await _outbox(store, snapshot(1, 1), snapshot(2, 1))
    await OutboxRelay(store, RefusingRouter({"s1", "s2"})).relay_pending()
    assert await store.dead_letters.undelivered() == []  # no subscription: nobody waits
    async with store.write() as tx:
        await tx.put_subscription(SubscriptionRow("s2", "t2", "{}", 1, 0, 0, 1, 0))
    assert [d.subscriber_id for d in await store.dead_letters.undelivered()] == ["s2"]
    async with store.write() as tx:
        assert await tx.remove_dead_letters(["s2", "s9"]) == 1
    assert await store.dead_letters.undelivered() == []
    assert [d.subscriber_id for d in await store.dead_letters.listing()] == ["s1"]


async def test_the_retention_job_removes_dead_letters_past_the_window(tmp_path: Path) -> None:
    """The dead-letter retention job removes, at its interval, the dead letters older than
    the retention window, and keeps the newer ones.
    """
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'retention.db'}")
    await store.open()
    try:
        for message, age in ((snapshot(1, 1), 60_000), (snapshot(2, 1), 0)):
            await store.dead_letters.bury(message, "413", 10, now_ms() - age, [], {})
        job = dead_letter_retention(store, retention_seconds=30, interval=0.05)
        job.start()
        try:

            async def pruned() -> bool:
                return len(await store.dead_letters.listing()) == 1

            await wait_for(pruned)
        finally:
            await job.close()
        assert [d.subscriber_id for d in await store.dead_letters.listing()] == ["s2"]
    finally:
        await store.close()


async def test_on_jetstream_a_message_over_the_streams_limit_is_a_dead_letter(
    tmp_path: Path,
) -> None:
    """With the real JetStream refusing one snapshot for its size (the stream's max_msg_size),
    the relay delivers the snapshots before and after it and makes that one a dead letter
    with JetStream's reason.
    """
    router, store = await open_nats_router(tmp_path)
    try:
        nc = await nats.connect(NATS_URL)
        try:
            js = nc.jetstream()
            config = (await js.stream_info(router.stream)).config
            config.max_msg_size = 2000
            await js.update_stream(config)
        finally:
            await nc.close()
        big = OutMessage("t2", "y" * 4000, key="s2", revision=1, dedup_id="s2@1")
        await _outbox(store, snapshot(1, 1), big, snapshot(3, 1))
        assert await OutboxRelay(store, router).relay_pending() == 3
        info = await stream_info(NATS_URL, router.stream)
        assert info.state.messages == 2
        [letter] = await store.dead_letters.listing()
        assert (letter.subscriber_id, letter.size) == ("s2", 4000)
        assert "10054" in letter.reason
        assert await store.outbox.stats() == (0, None)
    finally:
        await router.close()
        await store.close()
