"""What only the NATS JetStream router does: compaction by the per-subject limit,
de-duplication by message id, replicas, and outages of the server.

Runs against the NATS server on 127.0.0.1:4222 (each test on a stream of its own, deleted at
the end) and, for outages, against a private nats-server on a free port, stopped by its pid
(the fixtures are in tests/nats_server.py).
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from policy_pubsub.config import Settings
from policy_pubsub.exceptions import RouterUnavailable
from policy_pubsub.routers import OutMessage, from_url
from policy_pubsub.routers.nats import HEADER_ALLOWANCE, NatsRouter
from policy_pubsub.store import Store
from tests.conftest import wait_for
from tests.nats_server import (
    NATS_SERVER,
    NATS_URL,
    PrivateNats,
    delete_stream,
    open_nats_router,
    skip_unless_ci,
    unique_stream,
)
from tests.processes import free_port


def _snapshot(topic: str, subscriber: str, revision: int) -> OutMessage:
    return OutMessage(
        topic=topic,
        body=f'{{"subscriber_id":"{subscriber}","revision":{revision}}}',
        key=subscriber,
        revision=revision,
        dedup_id=f"{subscriber}@{revision}",
    )


async def _read_all(router: NatsRouter, topic: str, group: str) -> list[str]:
    seen: list[str] = []
    while True:
        async with await router.read(topic, group, "c", timeout=0, limit=1000) as delivery:
            if not delivery.messages:
                return seen
            seen.extend(delivery.messages)
            await delivery.ack()


async def test_snapshots_are_compacted_to_the_newest_per_subscriber(
    nats_router: NatsRouter,
) -> None:
    """JetStream keeps only each subscriber's newest snapshot; keyless messages all stay."""
    await nats_router.publish([_snapshot("t", "a", 1), _snapshot("t", "b", 2)])
    await nats_router.publish([_snapshot("t", "a", 3)])
    await nats_router.publish([OutMessage("t", '{"raw":1}'), OutMessage("t", '{"raw":2}')])
    assert await _read_all(nats_router, "t", "g") == [
        '{"subscriber_id":"b","revision":2}',
        '{"subscriber_id":"a","revision":3}',
        '{"raw":1}',
        '{"raw":2}',
    ]
    assert (await nats_router.stats("t")).messages == 4


async def test_subscribers_are_compacted_per_topic(nats_router: NatsRouter) -> None:
    """The same subscriber id on two topics (or ids that differ in '.' and ':') is not
    compacted across them.
    """
    await nats_router.publish(
        [_snapshot("t.1", "a.b", 1), _snapshot("t:1", "a.b", 2), _snapshot("t.1", "a:b", 3)]
    )
    assert await _read_all(nats_router, "t.1", "g") == [
        '{"subscriber_id":"a.b","revision":1}',
        '{"subscriber_id":"a:b","revision":3}',
    ]
    assert await _read_all(nats_router, "t:1", "g") == ['{"subscriber_id":"a.b","revision":2}']


async def test_republished_message_ids_are_dropped(nats_router: NatsRouter) -> None:
    """A message sent again with the same dedup_id (the relay's retry) is stored once: a group
    that consumed the first copy does not get a second.
    """
    raw = OutMessage("t", '{"raw":1}', dedup_id="outbox-7")
    await nats_router.publish([_snapshot("t", "a", 1), raw])
    assert await _read_all(nats_router, "t", "g") == [
        '{"subscriber_id":"a","revision":1}',
        '{"raw":1}',
    ]
    await nats_router.publish([_snapshot("t", "a", 1), raw])
    assert await _read_all(nats_router, "t", "g") == []
    await nats_router.publish([OutMessage("t", '{"raw":1}', dedup_id="outbox-8")])
    assert await _read_all(nats_router, "t", "g") == ['{"raw":1}']


async def test_publish_is_refused_when_the_stream_is_gone(nats_router: NatsRouter) -> None:
    """A publish JetStream does not store raises RouterUnavailable, not a nats exception."""
    await nats_router.publish([OutMessage("t", "{}")])
    await delete_stream(NATS_URL, nats_router.stream)
    with pytest.raises(RouterUnavailable):
        await nats_router.publish([OutMessage("t", "{}")])
    with pytest.raises(RouterUnavailable):
        await nats_router.ping()


# -- replicas -------------------------------------------------------------------------------


async def test_positions_survive_a_restart(tmp_path: Path) -> None:
    """A group resumes after its last acknowledged message when the replica starts again."""
    router, store = await open_nats_router(tmp_path, keep_stream=True)
    stream = router.stream
    await router.publish([OutMessage("t", f'{{"n":{n}}}') for n in range(3)])
    async with await router.read("t", "g", "c", timeout=0, limit=2) as delivery:
        await delivery.ack()
    await router.close()
    await store.close()
    again, store = await open_nats_router(tmp_path, stream=stream)
    try:
        assert await _read_all(again, "t", "g") == ['{"n":2}']
        [group] = (await again.stats("t")).consumer_groups
        assert (group.name, group.lag) == ("g", 0)
    finally:
        await again.close()
        await store.close()


async def test_a_publish_on_one_replica_wakes_a_read_held_on_another(tmp_path: Path) -> None:
    """Replicas sharing a store and a stream serve the same topics and groups: a read held on
    one is answered by a publish on the other, and what one replica delivered the other does
    not deliver again, long before the position reaches the store.
    """
    one, store_one = await open_nats_router(tmp_path, position_flush_seconds=60)
    two, store_two = await open_nats_router(
        tmp_path, stream=one.stream, keep_stream=True, position_flush_seconds=60
    )
    try:
        await one.publish([OutMessage("t", '{"n":0}')])
        assert await _read_all(two, "t", "g") == ['{"n":0}']
        await wait_for(_lag_is(one, "t", "g", 0))
        reader = asyncio.create_task(two.read("t", "g", "c", timeout=30, limit=10))
        await wait_for(lambda: two.held_reads > 0)
        await one.publish([OutMessage("t", '{"n":1}')])
        async with await asyncio.wait_for(reader, timeout=5) as delivery:
            assert list(delivery.messages) == ['{"n":1}']
            await delivery.ack()
        await wait_for(_lag_is(one, "t", "g", 0))
        assert await _read_all(one, "t", "g") == []
        assert (
            await store_one.positions.group("t", "g") is None
        )  # nothing flushed yet: NATS told one
    finally:
        await two.close()
        await one.close()
        await store_two.close()
        await store_one.close()


def _lag_is(router: NatsRouter, topic: str, group: str, lag: int) -> Any:
    async def check() -> bool:
        stats = await router.stats(topic)
        return any(g.name == group and g.lag == lag for g in stats.consumer_groups)

    return check


# -- outages --------------------------------------------------------------------------------


async def test_start_fails_cleanly_without_a_server(tmp_path: Path) -> None:
    """Starting against a port where nothing listens raises RouterUnavailable promptly."""
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'router.db'}")
    await store.open()
    router = NatsRouter(
        f"nats://127.0.0.1:{free_port()}",
        store,
        max_age_seconds=60,
        position_flush_seconds=0,
        request_timeout=1.0,
    )
    try:
        with pytest.raises(RouterUnavailable):
            await router.start()
    finally:
        await router.close()
        await store.close()


async def test_outage_fails_cleanly_and_recovers(tmp_path: Path, private_nats: PrivateNats) -> None:
    """While the server is down publish, read and ping raise RouterUnavailable; after it
    restarts they work again, a read held across the outage is answered, nothing is lost.
    """
    router, store = await open_nats_router(tmp_path, url=private_nats.url)
    try:
        await router.publish([OutMessage("t", '{"n":0}')])
        assert await _read_all(router, "t", "g") == ['{"n":0}']
        held = asyncio.create_task(router.read("t", "g", "c", timeout=30, limit=10))
        await wait_for(lambda: router.held_reads > 0)
        await private_nats.stop()
        await wait_for(lambda: not router.connected)
        with pytest.raises(RouterUnavailable):
            await router.publish([OutMessage("t", '{"n":1}')])
        with pytest.raises(RouterUnavailable):
            await router.read("t", "other", "c", timeout=0, limit=10)
        with pytest.raises(RouterUnavailable):
            await router.ping()
        await private_nats.start()
        await wait_for(_pings(router), timeout=10)
        await router.publish([OutMessage("t", '{"n":2}')])
        async with await asyncio.wait_for(held, timeout=5) as delivery:
            assert list(delivery.messages) == ['{"n":2}']
            await delivery.ack()
        assert await _read_all(router, "t", "other") == ['{"n":0}', '{"n":2}']
    finally:
        await router.close()
        await store.close()


async def test_unacknowledged_publish_times_out(tmp_path: Path, private_nats: PrivateNats) -> None:
    """A publish the server does not acknowledge within the timeout raises RouterUnavailable."""
    router, store = await open_nats_router(tmp_path, url=private_nats.url, request_timeout=0.3)
    try:
        private_nats.signal(signal.SIGSTOP)
        try:
            with pytest.raises(RouterUnavailable):
                await router.publish([OutMessage("t", "{}")])
        finally:
            private_nats.signal(signal.SIGCONT)
        await wait_for(_pings(router), timeout=10)
        await router.publish([OutMessage("t", '{"n":1}')])
        assert '{"n":1}' in await _read_all(router, "t", "g")
    finally:
        await router.close()
        await store.close()


def _pings(router: NatsRouter) -> Any:
    async def check() -> bool:
        try:
            await router.ping()
        except RouterUnavailable:
            return False
        return True

    return check


# -- configuration --------------------------------------------------------------------------


async def test_from_url_builds_a_nats_router(tmp_path: Path) -> None:
    """`--router nats://...` builds the NATS router with the configured stream and max_age,
    which defaults to the retention.
    """
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    settings = Settings(nats_stream="PP_X", retention_seconds=99)
    router = from_url("nats://127.0.0.1:4222", store, settings)
    assert isinstance(router, NatsRouter)
    config = router.stream_config()
    assert (config.name, config.max_age) == ("PP_X", 99)
    other = from_url("nats://h:4222", store, Settings(nats_max_age_seconds=7))
    assert isinstance(other, NatsRouter)
    assert other.stream_config().max_age == 7
    await store.close()


async def test_the_largest_message_is_the_servers_max_payload_less_the_headers(
    tmp_path: Path,
) -> None:
    """Before connecting the router assumes NATS's default max_payload; once connected it
    carries the server's, less the allowance for headers.
    """
    if not os.access(NATS_SERVER, os.X_OK):
        skip_unless_ci(f"no nats-server binary at {NATS_SERVER}")
    server = PrivateNats(tmp_path / "small", max_payload=20_000)
    await server.start()
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    router = NatsRouter(
        server.url,
        store,
        stream=unique_stream(),
        max_age_seconds=60,
        position_flush_seconds=0.05,
    )
    try:
        assert router.max_message_bytes == 1024 * 1024 - HEADER_ALLOWANCE
        await store.open()
        await router.start()
        assert router.max_message_bytes == 20_000 - HEADER_ALLOWANCE
    finally:
        await router.close()
        await store.close()
        await server.stop()
