"""The RabbitMQ router on the real broker: the shape any AMQP client consumes, the MR read API
on a subscriber's queue, refusals for good, and the queue's life with its subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import aio_pika
import aio_pika.abc
import aiormq.exceptions
import pytest

from policy_pubsub.exceptions import MessageRefused, RouterUnavailable
from policy_pubsub.routers import OutMessage
from policy_pubsub.routers.amqp import AmqpRouter
from policy_pubsub.routers.amqp_shape import message_id
from policy_pubsub.store import Store, SubscriptionRow, now_ms
from tests.conftest import wait_for
from tests.processes import free_port
from tests.rabbitmq import AMQP_URL, DisposableAmqpRouter


def _id(prefix: str = "sub") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _snapshot(topic: str, key: str, revision: int) -> OutMessage:
    return OutMessage(
        topic,
        f'{{"subscriber_id":"{key}","revision":{revision}}}',
        key=key,
        revision=revision,
        dedup_id=f"{key}@{revision}",
    )


async def _subscribe(store: Store, subscriber_id: str, topic: str) -> None:
    """A subscription row, so that reads of group ``subscriber_id`` use its queue."""
    at = now_ms()
    async with store.write() as tx:
        await tx.put_subscription(SubscriptionRow(subscriber_id, topic, "{}", 1, at, at, 1, at))
        await tx.create_topics([topic], at)


async def _get(
    channel: aio_pika.abc.AbstractChannel, queue: str
) -> aio_pika.abc.AbstractIncomingMessage:
    """The next message of a queue, waited for (a quorum queue takes a moment)."""
    source = await channel.get_queue(queue, ensure=False)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while True:
        message = await source.get(no_ack=False, fail=False)
        if message is not None:
            return message
        if loop.time() > deadline:
            pytest.fail(f"nothing arrived in queue {queue}")
        await asyncio.sleep(0.02)


async def test_a_plain_consumer_gets_each_snapshot_again_until_it_acknowledges(
    amqp_router: DisposableAmqpRouter,
) -> None:
    """A snapshot reaches its subscriber's queue persistent, as JSON, with the dedup id and
    revision; read without acknowledging, it comes again on a new connection, until acked.
    """
    key = _id()
    snapshot = _snapshot("t.one", key, 7)
    await amqp_router.publish([snapshot])
    for attempt in range(2):
        connection = await aio_pika.connect(AMQP_URL)
        try:
            channel = await connection.channel()
            message = await _get(channel, key)
            assert message.body.decode() == snapshot.body
            assert message.content_type == "application/json"
            assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
            assert message.message_id == f"{key}@7"
            assert message.headers["revision"] == 7
            assert message.redelivered is (attempt == 1)
            if attempt == 1:
                await message.ack()
        finally:
            await connection.close()
    connection = await aio_pika.connect(AMQP_URL)
    try:
        queue = await (await connection.channel()).declare_queue(key, passive=True)
        assert queue.declaration_result.message_count == 0
    finally:
        await connection.close()


async def test_a_subscribers_group_reads_its_queue(amqp_router: DisposableAmqpRouter) -> None:
    """The MR read API with the subscriber id as group reads the subscriber's queue: in
    order, at most ``limit``, nothing consumed until acknowledged, and stats show the depth.
    """
    key = _id()
    await _subscribe(amqp_router_store(amqp_router), key, "t.read")
    await amqp_router.publish([_snapshot("t.read", key, n) for n in range(1, 6)])
    await wait_for(lambda: _depth(amqp_router, "t.read", key, 5))
    async with await amqp_router.read("t.read", key, "c", timeout=0, limit=2) as delivery:
        assert [m[-2] for m in delivery.messages] == ["1", "2"]
        await delivery.ack()
    async with await amqp_router.read("t.read", key, "c", timeout=0, limit=10) as delivery:
        assert [m[-2] for m in delivery.messages] == ["3", "4", "5"]  # released, not acked
    stats = await amqp_router.stats("t.read")
    assert [(g.name, g.lag) for g in stats.consumer_groups] == [(key, 3)]
    assert stats.oldest_unread_at is not None
    async with await amqp_router.read("t.read", key, "c", timeout=0, limit=10) as delivery:
        assert [m[-2] for m in delivery.messages] == ["3", "4", "5"]
        await delivery.ack()
    assert (await amqp_router.stats("t.read")).oldest_unread_at is None
    # A held read is answered by the next publish.
    reader = asyncio.create_task(amqp_router.read("t.read", key, "c", timeout=30, limit=10))
    await wait_for(lambda: amqp_router.held_reads > 0)
    await amqp_router.publish([_snapshot("t.read", key, 6)])
    async with await asyncio.wait_for(reader, 5) as delivery:
        assert [m[-2] for m in delivery.messages] == ["6"]
        await delivery.ack()


def amqp_router_store(router: DisposableAmqpRouter) -> Store:
    return router._store


async def _depth(router: DisposableAmqpRouter, topic: str, group: str, want: int) -> bool:
    stats = await router.stats(topic)
    return [(g.name, g.lag) for g in stats.consumer_groups] == [(group, want)]


async def test_the_largest_snapshot_is_delivered_whole(amqp_router: DisposableAmqpRouter) -> None:
    """A snapshot of exactly ``max_message_bytes`` for the longest subscriber id (a queue name
    of 255 bytes) arrives unchanged; its dedup id, too long for message_id, as its digest.
    """
    key = "s" * 200 + uuid.uuid4().hex + "x" * 23
    assert len(key) == 255
    body = '{"pad":"' + "x" * (amqp_router.max_message_bytes - 10) + '"}'
    revision = 10**15
    dedup = f"{key}@{revision}"
    await amqp_router.publish([OutMessage("t", body, key=key, revision=revision, dedup_id=dedup)])
    connection = await aio_pika.connect(AMQP_URL)
    try:
        message = await _get(await connection.channel(), key)
        assert message.body.decode() == body
        assert message.message_id == message_id(dedup) != dedup
    finally:
        await connection.close()


async def test_refused_for_good_stops_at_that_message(amqp_router: DisposableAmqpRouter) -> None:
    """A queue RabbitMQ will not declare (an ``amq.`` name) or a message over the largest size
    is MessageRefused naming it; the messages before it are delivered, none after it.
    """
    first, after = _id(), _id()
    reserved = f"amq.{_id()}"
    batch = [_snapshot("t.r", first, 1), _snapshot("t.r", reserved, 1), _snapshot("t.r", after, 1)]
    with pytest.raises(MessageRefused) as refused:
        await amqp_router.publish(batch)
    assert refused.value.refused == batch[1]
    assert "ACCESS_REFUSED" in refused.value.reason
    big = OutMessage("t.r", "x" * (amqp_router.max_message_bytes + 1), key=after, revision=2)
    with pytest.raises(MessageRefused) as too_big:
        await amqp_router.publish([_snapshot("t.r", after, 1), big, _snapshot("t.r", after, 3)])
    assert too_big.value.refused == big
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        assert (await _get(channel, first)).headers["revision"] == 1
        queue = await channel.declare_queue(after, passive=True)
        assert queue.declaration_result.message_count == 1  # revision 1 only
    finally:
        await connection.close()


async def test_unsubscribe_deletes_the_queue_and_a_deleted_queue_is_made_again(
    amqp_router: DisposableAmqpRouter,
) -> None:
    """subscription_left deletes an unsubscribed queue; a snapshot whose queue vanished behind
    the router's back (returned unroutable) gets its queue again and arrives.
    """
    key = _id()
    await amqp_router.publish([_snapshot("t.gone", key, 1)])
    await amqp_router.subscription_left(key, "t.gone", deleted=True)
    connection = await aio_pika.connect(AMQP_URL)
    try:
        with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
            await (await connection.channel()).declare_queue(key, passive=True)
        await amqp_router.publish([_snapshot("t.gone", key, 2)])  # declared anew
        other = AmqpRouter(
            AMQP_URL,
            amqp_router_store(amqp_router),
            exchange=amqp_router.exchange,
            retention_seconds=3600,
            queue_max_length=100,
            max_message_bytes=1024,
        )
        try:
            await other.subscription_left(key, "t.gone", deleted=True)  # another replica
        finally:
            await other.close()
        await amqp_router.publish([_snapshot("t.gone", key, 3)])  # returned, declared, sent
        assert (await _get(await connection.channel(), key)).headers["revision"] == 3
    finally:
        await connection.close()


@pytest.mark.parametrize("where", ["port", "vhost"])
async def test_an_unreachable_broker_is_unavailable(
    amqp_router: DisposableAmqpRouter, where: str
) -> None:
    """A wrong port or vhost makes start log and go on, and publish and ping raise
    RouterUnavailable: the relay keeps the messages and retries.
    """
    url = (
        f"amqp://guest:guest@127.0.0.1:{free_port()}/"
        if where == "port"
        else "amqp://guest:guest@127.0.0.1:5672/no-such-vhost"
    )
    router = AmqpRouter(
        url,
        amqp_router_store(amqp_router),
        exchange=amqp_router.exchange,
        retention_seconds=3600,
        queue_max_length=100,
        max_message_bytes=1024,
        timeout=2,
    )
    try:
        await router.start()
        with pytest.raises(RouterUnavailable):
            await router.publish([_snapshot("t", _id(), 1)])
        with pytest.raises(RouterUnavailable):
            await router.ping()
    finally:
        await router.close()


async def test_stats_count_each_queues_ready_messages_and_consumers(
    amqp_router: DisposableAmqpRouter,
) -> None:
    """A plain consumer attached to a subscriber's queue shows up as one consumer, and the lag
    is what the queue holds ready: the message delivered to it and not acknowledged is not
    ready (AMQP does not count it) until its channel closes and it is ready again. ``lags``
    and the summary say the same in bulk.
    """
    key, idle = _id(), _id()
    store = amqp_router_store(amqp_router)
    await _subscribe(store, key, "t.counts")
    await _subscribe(store, idle, "t.idle")
    await amqp_router.publish([_snapshot("t.counts", key, n) for n in range(1, 4)])
    await amqp_router.publish([_snapshot("t.idle", idle, 1)])
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1)
        taken: list[aio_pika.abc.AbstractIncomingMessage] = []

        async def keep(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            taken.append(message)  # never acknowledged

        await (await channel.get_queue(key, ensure=False)).consume(keep)
        await wait_for(lambda: _groups(amqp_router, "t.counts", [(key, 2, 1)]))
        assert len(taken) == 1
        assert await amqp_router.lags(["t.counts", "t.idle", "t.none"]) == {
            "t.counts": 2,
            "t.idle": 1,
        }
        summary = await amqp_router.queue_summary()
        assert (summary.queues, summary.messages, summary.consumers) == (2, 3, 1)
        assert (summary.without_consumers, summary.complete) == (1, True)
    finally:
        await connection.close()
    await wait_for(lambda: _groups(amqp_router, "t.counts", [(key, 3, 0)]))


async def _groups(
    router: DisposableAmqpRouter, topic: str, want: list[tuple[str, int, int | None]]
) -> bool:
    stats = await router.stats(topic)
    return [(g.name, g.lag, g.consumers) for g in stats.consumer_groups] == want


async def test_many_queues_are_counted_a_few_at_a_time(
    amqp_router: DisposableAmqpRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counts of more queues than readers, some not made yet (whose declare closes the
    reader's channel): every queue that exists is counted, the others left out.
    """
    monkeypatch.setattr("policy_pubsub.routers.amqp.COUNT_CONCURRENCY", 3)
    made = [_id("made") for _ in range(8)]
    missing = [_id("missing") for _ in range(5)]
    await amqp_router.publish([_snapshot(f"t.many.{key}", key, 1) for key in made])
    counts = await amqp_router.queue_counts([*missing[:2], *made, *missing[2:]])
    assert {q: (c.messages, c.consumers) for q, c in counts.items()} == dict.fromkeys(made, (1, 0))


async def test_a_batch_larger_than_the_window_arrives_whole_and_in_order(
    amqp_router: DisposableAmqpRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With fewer messages unconfirmed at a time than the batch holds, every message is
    confirmed and lands in order.
    """
    monkeypatch.setattr("policy_pubsub.routers.amqp.PUBLISH_WINDOW", 2)
    key = _id()
    await amqp_router.publish([_snapshot("t.window", key, n) for n in range(1, 8)])
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        revisions = [(await _get(channel, key)).headers["revision"] for _ in range(7)]
        assert revisions == list(range(1, 8))
    finally:
        await connection.close()


async def test_counting_many_missing_queues_keeps_the_connections(
    amqp_router: DisposableAmqpRouter,
) -> None:
    """Each missing queue makes RabbitMQ close the reader's channel; hundreds of them, read
    16 at a time, close no connection (a reused channel number would: "second
    'channel.open' seen"), and publishing goes on.
    """
    missing = [_id("missing") for _ in range(300)]
    for _ in range(2):
        assert await amqp_router.queue_counts(missing) == {}
    key = _id()
    await amqp_router.publish([_snapshot("t.after", key, 1)])
    assert (await amqp_router.queue_counts([key]))[key].messages == 1


async def test_a_connection_rabbitmq_closed_is_made_again(
    amqp_router: DisposableAmqpRouter,
) -> None:
    """After RabbitMQ closed the router's connection (here with 504, for a channel opened
    twice under one number), the next publish and ping connect again instead of failing on
    the dead connection for ever.
    """
    connection = await amqp_router._connect()
    amqp = connection.transport.connection  # type: ignore[union-attr]
    number = max(amqp.channels) + 1
    await amqp.channel(number, publisher_confirms=False)
    del amqp.channels[number]  # the client forgets it: the next open is a second one
    with contextlib.suppress(Exception):
        await asyncio.wait_for(amqp.channel(number, publisher_confirms=False), 5)
    await wait_for(lambda: amqp.is_closed)
    await amqp_router.ping()
    key = _id()
    await amqp_router.publish([_snapshot("t.again", key, 1)])
    assert (await amqp_router.queue_counts([key]))[key].messages == 1
