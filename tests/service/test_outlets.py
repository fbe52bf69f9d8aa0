"""The two outlets, each with the service writing through it: snapshots appended to the
store's topics and held reads woken, or snapshots written to the outbox for the relay.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
from sqlalchemy import select

from policy_pubsub.routers.dmaap import DmaapRouter
from policy_pubsub.routers.embedded import EmbeddedRouter
from policy_pubsub.service import InStoreOutlet, OutboxOutlet, outlet_for
from policy_pubsub.store import Store
from policy_pubsub.store.tables import snapshot_bodies
from tests.service.conftest import embedded_router, open_service, request, tosca


@pytest.fixture
async def router(store: Store) -> AsyncIterator[EmbeddedRouter]:
    started = embedded_router(store)
    await started.start()
    try:
        yield started
    finally:
        await started.close()


async def test_in_store_outlet_appends_to_the_topic_and_wakes_held_reads(
    store: Store, router: EmbeddedRouter
) -> None:
    """With the in-store outlet a read held on the topic is answered with the snapshot as soon
    as the change commits, and the topic holds it in the store.
    """
    service = await open_service(store, InStoreOutlet(router))
    await service.subscribe("s", request("t", {"policy-id": "p"}))
    async with await router.read("t", "g", "c", timeout=5, limit=10) as delivery:
        assert [orjson.loads(m)["event"] for m in delivery.messages] == ["subscribe"]
        await delivery.ack()

    held = asyncio.create_task(router.read("t", "g", "c", timeout=30, limit=10))
    await asyncio.sleep(0.05)
    assert not held.done()
    pushed = await service.deploy([tosca("p")])
    async with await asyncio.wait_for(held, timeout=5) as delivery:
        [body] = delivery.messages
        assert orjson.loads(body)["revision"] == pushed.revision
    assert (await store.topics.get("t")) is not None


async def test_subscribers_with_the_same_filters_share_a_stored_end_and_read_it_whole(
    store: Store, router: EmbeddedRouter
) -> None:
    """A push to subscribers with the same filters, each on its own topic, stores the policies
    they share once; each reads its own whole snapshot, equal to what the push handed on, and
    the subscriber alone with its filters gets a whole one too.
    """
    service = await open_service(store, InStoreOutlet(router))
    await service.deploy([tosca("base", padding=200)])
    for subscriber_id in ("a", "b"):
        await service.subscribe(subscriber_id, request(f"t-{subscriber_id}", {"policy-id": "*"}))
    await service.subscribe("c", request("t-c", {"policy-id": "new"}))
    pushed = await service.deploy([tosca("new")])
    async with store.read() as conn:
        shared = (await conn.execute(select(snapshot_bodies.c.revision))).scalars().all()
    assert shared == [pushed.revision]
    router._forget_tails()  # read from the store, not from memory
    for subscriber_id, policies in (("a", ["base", "new"]), ("b", ["base", "new"]), ("c", ["new"])):
        rows = await store.topics.messages(f"t-{subscriber_id}", 1, 10)
        [snapshot] = [orjson.loads(body) for _, body in rows]
        assert snapshot["subscriber_id"] == subscriber_id
        assert (snapshot["revision"], snapshot["event"]) == (pushed.revision, "update")
        assert sorted(snapshot["policies"]) == policies


async def test_outbox_outlet_writes_the_outbox_and_creates_the_topic(store: Store) -> None:
    """With the outbox outlet the snapshots wait in the outbox, in order, for the relay; the
    topic exists in the store at once.
    """
    elsewhere = DmaapRouter("dmaap+http://127.0.0.1:9")  # never started nor reached
    try:
        outlet, relay = outlet_for(store, elsewhere)
    finally:
        await elsewhere.close()
    assert isinstance(outlet, OutboxOutlet) and relay is not None
    service = await open_service(store, outlet)
    await service.subscribe("s", request("t", {"policy-id": "p"}))
    pushed = await service.deploy([tosca("p")])
    waiting = await store.outbox.batch(10)
    assert [(m.topic, m.key, m.revision) for _, m in waiting] == [
        ("t", "s", pushed.revision - 1),
        ("t", "s", pushed.revision),
    ]
    assert (await store.topics.get("t")) is not None


async def test_the_embedded_router_gets_the_in_store_outlet(
    store: Store, router: EmbeddedRouter
) -> None:
    """The embedded router keeps its topics in the store: no relay, the in-store outlet."""
    outlet, relay = outlet_for(store, router)
    assert isinstance(outlet, InStoreOutlet) and relay is None
