"""The relay's pipeline: a batch reaches the router only after the previous one was
acknowledged, the next batch is read and the previous deleted meanwhile, and a publish that
fails half-way is retried without putting a subscriber's older snapshot after a newer one.

The routers here are fakes that record what they were given; test_nats_outage.py runs the
relay against a real JetStream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from policy_pubsub.api.health import RELAY_FAILURES
from policy_pubsub.api.health import relay_check as health_relay
from policy_pubsub.exceptions import RouterUnavailable
from policy_pubsub.relay import OutboxRelay, newest_per_subscriber
from policy_pubsub.routers import Delivery, OutMessage, Router, TopicStats
from policy_pubsub.store import OutboxRepository, Store, now_ms
from tests.conftest import wait_for
from tests.relay.helpers import fill_outbox, snapshot


class FakeRouter(Router):
    """A router outside the store that only publishes; the rest of the contract is unused."""

    @property
    def max_message_bytes(self) -> int:
        return 1024 * 1024

    @property
    def held_reads(self) -> int:
        return 0

    async def start(self) -> None:
        return None

    async def drain(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def publish(self, batch: Sequence[OutMessage]) -> None:
        raise NotImplementedError

    async def read(
        self,
        topic: str,
        group: str,
        consumer: str,
        *,
        timeout: float,
        limit: int,
        gone: asyncio.Future[None] | None = None,
    ) -> Delivery:
        raise NotImplementedError

    async def topics(self) -> list[str]:
        raise NotImplementedError

    async def stats(self, topic: str) -> TopicStats:
        raise NotImplementedError

    async def ping(self) -> None:
        return None


class GatedRouter(FakeRouter):
    """Each publish call waits until the test opens its gate."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.gates: list[asyncio.Event] = []
        self.active = 0
        self.most_active = 0

    def open(self, call: int) -> None:
        while len(self.gates) <= call:
            self.gates.append(asyncio.Event())
        self.gates[call].set()

    async def publish(self, batch: Sequence[OutMessage]) -> None:
        call = len(self.calls)
        self.calls.append(len(batch))
        while len(self.gates) <= call:
            self.gates.append(asyncio.Event())
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            await self.gates[call].wait()
        finally:
            self.active -= 1


class CountingOutbox(OutboxRepository):
    """Counts the relay's reads of a following batch."""

    following_reads = 0

    async def batch(self, limit: int, after: int = 0) -> list[tuple[int, OutMessage]]:
        rows = await super().batch(limit, after)
        if after:
            self.following_reads += 1
        return rows


class CountingStore(Store):
    """A store whose outbox counts the relay's reads of a following batch."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.outbox = self.counting = CountingOutbox(self)


@pytest.fixture
async def counting_store(tmp_path: Any) -> AsyncIterator[CountingStore]:
    opened = CountingStore(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def _depth(store: Store) -> int:
    return (await store.outbox.stats())[0]


async def test_a_batch_waits_for_the_previous_ones_acknowledgement(
    counting_store: CountingStore,
) -> None:
    """While the router holds batch 1 unacknowledged, the relay reads batch 2 but does not
    publish it; while batch 2 is out, batch 1 is deleted. Nothing is deleted before the router
    acknowledged it.
    """
    store = counting_store
    await fill_outbox(store, subscribers=2500, revisions=1)
    router = GatedRouter()
    relay = OutboxRelay(store, router, batch_size=1000)
    relay.start()
    try:
        await wait_for(lambda: len(router.calls) == 1)
        await wait_for(lambda: store.counting.following_reads == 1)
        assert await _depth(store) == 2500  # batch 1 is not acknowledged: nothing deleted
        assert router.calls == [1000]

        router.open(0)
        await wait_for(lambda: len(router.calls) == 2)
        await wait_for(lambda: _depth_is(store, 1500))  # batch 1 deleted while 2 is out
        assert relay.published == 1000

        router.open(1)
        router.open(2)
        await wait_for(lambda: _depth_is(store, 0))
    finally:
        await relay.close()
    assert router.calls == [1000, 1000, 500]
    assert router.most_active == 1
    assert relay.published == 2500
    assert relay.last_error is None


async def _depth_is(store: Store, depth: int) -> bool:
    return await _depth(store) == depth


class JetStreamLike(FakeRouter):
    """Keeps what JetStream would: the newest message per subject, each message id once.
    It can fail a publish call after storing part of it, as an outage mid-window does.
    """

    def __init__(self, failures: dict[int, int]) -> None:
        self.failures = failures  # publish call -> messages stored before it fails
        self.calls = 0
        self.ids: set[str] = set()
        self.stored: dict[str, list[int]] = {}  # subscriber -> revisions, in store order
        self.duplicates = 0

    async def publish(self, batch: Sequence[OutMessage]) -> None:
        call, self.calls = self.calls, self.calls + 1
        for index, message in enumerate(batch):
            if self.failures.get(call) == index:
                raise RouterUnavailable(f"connection lost after {index} messages")
            assert message.dedup_id is not None and message.key is not None
            assert message.revision is not None
            if message.dedup_id in self.ids:
                self.duplicates += 1
                continue
            self.ids.add(message.dedup_id)
            self.stored.setdefault(message.key, []).append(message.revision)
            await asyncio.sleep(0)


async def test_a_publish_that_fails_half_way_keeps_each_subscribers_order(store: Store) -> None:
    """Publishes that fail after storing part of their batch are retried from the oldest row:
    every subscriber ends at its newest revision, and no older snapshot is stored after a
    newer one.
    """
    await fill_outbox(store, subscribers=1500, revisions=3)
    router = JetStreamLike(failures={1: 300, 3: 700, 4: 0})
    relay = OutboxRelay(store, router, batch_size=1000, max_backoff=0.01)
    relay.start()
    try:
        await wait_for(lambda: _depth_is(store, 0), timeout=20)
    finally:
        await relay.close()
    assert router.calls > 5  # the failures happened and were retried
    assert router.duplicates > 0  # the retries re-sent what was stored
    assert len(router.stored) == 1500
    for subscriber, revisions in router.stored.items():
        assert revisions == sorted(set(revisions)), (subscriber, revisions)
        assert revisions[-1] == 3, (subscriber, revisions)
    assert relay.last_error is None


class OpenRouter(GatedRouter):
    """Acknowledges every batch at once."""

    async def publish(self, batch: Sequence[OutMessage]) -> None:
        self.calls.append(len(batch))


async def test_a_relay_that_loses_the_lead_stops_after_the_batch_in_hand(store: Store) -> None:
    """The lead is checked before each batch is published, once it was read: once it is
    lost, the relay finishes the batch it is publishing and publishes no other; with the lead
    kept it empties the outbox.
    """
    await fill_outbox(store, subscribers=3500, revisions=1)
    router = OpenRouter()
    relay = OutboxRelay(store, router, batch_size=1000)
    answers = iter([True, True, False])

    async def leading() -> bool:
        return next(answers)

    assert await relay.relay_pending(leading) == 2000
    assert router.calls == [1000, 1000]
    assert await _depth(store) == 1500

    async def still_leading() -> bool:
        return True

    assert await relay.relay_pending(still_leading) == 1500
    assert router.calls == [1000, 1000, 1000, 500]
    assert await _depth(store) == 0
    assert relay.published == 3500


def test_a_batch_keeps_only_each_subscribers_newest_snapshot() -> None:
    """Within one relay batch, older snapshots of a subscriber are dropped; order is kept."""
    batch = [
        OutMessage("t", "a1", key="a", revision=1),
        OutMessage("t", "raw1"),
        OutMessage("t", "b2", key="b", revision=2),
        OutMessage("t", "a3", key="a", revision=3),
        OutMessage("u", "a3u", key="a", revision=3),
        OutMessage("t", "raw2"),
    ]
    kept = [m.body for m in newest_per_subscriber(batch)]
    assert kept == ["raw1", "b2", "a3", "a3u", "raw2"]


async def test_health_says_failing_after_attempts_in_a_row_fail_then_healthy_again(
    store: Store,
) -> None:
    """The router answers its pings but refuses what the relay hands it: after RELAY_FAILURES
    failed attempts in a row /healthcheck's relay check says so at once (not after
    relay_stuck_seconds); once a publish goes through, the count is back to 0 and it is ok.
    """
    await fill_outbox(store, subscribers=10, revisions=1)
    refusals = RELAY_FAILURES + 2
    router = JetStreamLike(failures={call: 0 for call in range(refusals)})
    relay = OutboxRelay(store, router, batch_size=1000, max_backoff=0.05)
    seen: list[str | None] = []

    async def check() -> bool:
        _, why = await health_relay(relay, 1e12, router_up=True)
        seen.append(why)
        return relay.failures == 0 and router.calls > refusals

    relay.start()
    try:
        await wait_for(check, timeout=20)
    finally:
        await relay.close()
    failing = [why for why in seen if why is not None]
    assert failing and all(why.startswith("failing: the last") for why in failing), seen
    assert (await health_relay(relay, 1e12, router_up=True))[1] is None  # healthy again
    assert (await health_relay(relay, 1e12, router_up=False))[1] is None  # router's check says


async def test_health_says_stuck_once_the_oldest_outbox_message_waited_too_long(
    store: Store,
) -> None:
    """An outbox message older than relay_stuck_seconds while the router answers is "stuck",
    with the outbox's figures; with the router down, the router's own check says why.
    """
    async with store.write() as tx:
        await tx.outbox_add([snapshot(1, 1)], now_ms() - 5000)
    relay = OutboxRelay(store, FakeRouter())
    outbox, why = await health_relay(relay, 1.0, router_up=True)
    assert why is not None and why.startswith("stuck: the oldest of 1 outbox messages"), why
    assert outbox is not None and outbox["depth"] == 1
    assert (await health_relay(relay, 60.0, router_up=True))[1] is None
    assert (await health_relay(relay, 1.0, router_up=False))[1] is None
