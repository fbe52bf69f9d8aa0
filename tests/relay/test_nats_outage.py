"""The relay against a real JetStream that stops answering in the middle of a pipelined
publish, then goes down and comes back: nothing is lost, nothing is stored twice, and every
subscriber's newest snapshot is the one the stream keeps.

Runs against a private nats-server on a free port (stopped and restarted by its pid).
"""

from __future__ import annotations

import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from policy_pubsub.relay import OutboxRelay
from policy_pubsub.routers.nats import NatsRouter
from policy_pubsub.store import Store
from tests.conftest import wait_for
from tests.nats_server import PrivateNats, unique_stream
from tests.relay.helpers import fill_outbox

SUBSCRIBERS = 2000
REVISIONS = 3
TOPICS = 10


@pytest.fixture
async def router(store: Store, private_nats: PrivateNats) -> AsyncIterator[NatsRouter]:
    started = NatsRouter(
        private_nats.url,
        store,
        stream=unique_stream(),
        max_age_seconds=3600,
        position_flush_seconds=0.05,
        request_timeout=0.5,
        reconnect_wait=0.05,
    )
    await started.start()
    try:
        yield started
    finally:
        await started.close()


async def _depth_is_zero(store: Store) -> bool:
    return (await store.outbox.stats())[0] == 0


async def _stream_counts(url: str, stream: str) -> tuple[int, int]:
    nc = await nats.connect(url, allow_reconnect=False, connect_timeout=2)
    try:
        state = (await nc.jetstream().stream_info(stream)).state
        return state.messages, state.last_seq
    finally:
        await nc.close()


async def _retained(router: NatsRouter) -> list[dict[str, int | str]]:
    """Every message the stream keeps, read topic by topic through a fresh consumer group."""
    seen: list[dict[str, int | str]] = []
    for topic in range(TOPICS):
        while True:
            delivery = await router.read(f"t{topic}", "check", "c", timeout=0, limit=1000)
            async with delivery:
                if not delivery.messages:
                    break
                seen.extend(json.loads(m) for m in delivery.messages)
                await delivery.ack()
    return seen


async def test_an_outage_mid_window_loses_nothing_and_stores_nothing_twice(
    tmp_path: Path, store: Store, router: NatsRouter, private_nats: PrivateNats
) -> None:
    """The broker freezes (SIGSTOP) once it stored part of the relay's second batch, with the
    rest still in flight; the publish times out. The broker then stops and restarts on the same
    storage. Once the relay has emptied the outbox, each of the 6,000 snapshots was stored
    exactly once (the stream's last sequence), the batch re-sent after the outage having been
    dropped as duplicates, and the stream keeps each subscriber's newest.
    """
    await fill_outbox(store, SUBSCRIBERS, REVISIONS)
    # A batch is one revision of every subscriber: nothing in it is superseded, so each
    # snapshot must be stored, and stored once.
    relay = OutboxRelay(store, router, batch_size=SUBSCRIBERS, max_backoff=0.2)
    watcher = await nats.connect(private_nats.url, allow_reconnect=False, connect_timeout=2)
    js = watcher.jetstream()
    stored: list[int] = []

    async def second_batch_half_stored() -> bool:
        stored.append((await js.stream_info(router.stream)).state.last_seq)
        return stored[-1] > SUBSCRIBERS * 1.1

    relay.start()
    try:
        await wait_for(second_batch_half_stored, timeout=20, every=0.001)
        private_nats.signal(signal.SIGSTOP)
        try:
            await wait_for(lambda: relay.last_error is not None, timeout=10)
        finally:
            private_nats.signal(signal.SIGCONT)
            await watcher.close()
        assert (await store.outbox.stats())[0] > 0
        await private_nats.stop()
        await private_nats.start()
        await wait_for(lambda: _depth_is_zero(store), timeout=60)
    finally:
        await relay.close()
    assert relay.published == SUBSCRIBERS * REVISIONS
    messages, last_seq = await _stream_counts(private_nats.url, router.stream)
    assert last_seq == SUBSCRIBERS * REVISIONS
    assert messages == SUBSCRIBERS
    retained = await _retained(router)
    assert sorted(str(s["subscriber_id"]) for s in retained) == sorted(
        f"s{i}" for i in range(SUBSCRIBERS)
    )
    assert {s["revision"] for s in retained} == {REVISIONS}
