"""The two outlets, each with the service writing through it: snapshots appended to the
store's topics and held reads woken, or snapshots written to the outbox for the relay.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
from sqlalchemy import select

from policy_pubsub.exceptions import NotFound
from policy_pubsub.routers import Delivery
from policy_pubsub.routers.dmaap import DmaapRouter
from policy_pubsub.routers.embedded import EmbeddedRouter
from policy_pubsub.service import InStoreOutlet, OutboxOutlet, PolicyService, outlet_for
from policy_pubsub.store import Store
from policy_pubsub.store.tables import snapshot_bodies
from tests.conftest import wait_for
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


def _groups(router: EmbeddedRouter) -> set[tuple[str, str]]:
    return {(state.topic, state.name) for state in router._positions.states()}


async def test_topics_subscribers_leave_leave_nothing_in_the_routers_memory(
    store: Store, router: EmbeddedRouter
) -> None:
    """Subscribers that each subscribe on a new topic, read it and unsubscribe leave none of
    those topics' heads, tails or group positions in the router's memory: it holds what the
    topics in use need, however many came and went; a topic subscribed to again after that
    hands out its new snapshot at an offset past every one it handed out before.
    """
    service = await open_service(store, InStoreOutlet(router))
    await service.subscribe("keeper", request("kept", {"policy-id": "p"}))
    for n in range(200):
        topic = f"churn-{n}"
        await service.subscribe(f"s{n}", request(topic, {"policy-id": "p"}))
        async with await router.read(topic, "g", "c", timeout=5, limit=10) as delivery:
            assert [orjson.loads(m)["event"] for m in delivery.messages] == ["subscribe"]
            await delivery.ack()
        await service.unsubscribe(f"s{n}")
    async with await router.read("kept", "g", "c", timeout=5, limit=10) as delivery:
        await delivery.ack()
    assert _groups(router) == {("kept", "g")}
    assert set(router._tails) <= {"kept"}
    assert not router._forgettable and not router._reading
    assert not router._held._waiters
    if not store.shared:  # (there other replicas' announcements name topics too)
        assert set(router._heads) == {"kept"}

    before = await store.topics.get("churn-0")
    assert before is not None and before.last_offset >= 1
    again = await service.subscribe("back", request("churn-0", {"policy-id": "p"}))
    async with await router.read("churn-0", "g", "c", timeout=5, limit=10) as delivery:
        [body] = delivery.messages
        assert orjson.loads(body)["revision"] == again.subscription.revision
        await delivery.ack()
    after = await store.topics.get("churn-0")
    assert after is not None and after.last_offset == before.last_offset + 1


async def _left_while_held(
    store: Store, router: EmbeddedRouter, *, timeout: float
) -> tuple[PolicyService, asyncio.Task[Delivery]]:
    """Subscriber s of topic t, whose snapshot group g read, unsubscribes while a read of
    g (of ``timeout`` seconds) is held on t; the service and that read.
    """
    service = await open_service(store, InStoreOutlet(router))
    await service.subscribe("s", request("t", {"policy-id": "p"}))
    async with await router.read("t", "g", "c", timeout=5, limit=10) as delivery:
        await delivery.ack()
    held = asyncio.create_task(router.read("t", "g", "c", timeout=timeout, limit=10))
    await wait_for(lambda: router.held_reads == 1)
    await service.unsubscribe("s")
    return service, held


async def test_a_topic_left_while_a_read_is_held_on_it_is_forgotten_when_the_read_ends(
    store: Store, router: EmbeddedRouter
) -> None:
    """A topic its last subscriber leaves while a read is held on it stays in memory until
    that read ends, which it does as before (empty, at its deadline); then it is forgotten.
    """
    _, held = await _left_while_held(store, router, timeout=1)
    assert "t" in router._forgettable and ("t", "g") in _groups(router)
    async with await asyncio.wait_for(held, timeout=5) as delivery:
        assert list(delivery.messages) == []
    assert not router._forgettable and ("t", "g") not in _groups(router)
    if not store.shared:  # (there other replicas' announcements name topics too)
        assert "t" not in router._heads


async def test_a_topic_left_while_read_and_subscribed_to_again_is_kept(
    store: Store, router: EmbeddedRouter
) -> None:
    """A topic its last subscriber leaves while a read is held on it, and that a new
    subscriber takes before the read ends, is in use again and kept: the held read gets the
    new subscriber's snapshot, and the group's position stays in memory.
    """
    service, held = await _left_while_held(store, router, timeout=30)
    taken = await service.subscribe("s2", request("t", {"policy-id": "p"}))
    async with await asyncio.wait_for(held, timeout=5) as delivery:
        [body] = delivery.messages
        assert orjson.loads(body)["revision"] == taken.subscription.revision
        await delivery.ack()
    assert not router._forgettable and "t" in router._heads
    assert ("t", "g") in _groups(router)


async def test_a_topic_read_after_its_last_subscriber_left_is_forgotten_by_maintenance(
    store: Store,
) -> None:
    """A read that reaches a topic after its last subscriber left (the subscriber's last
    poll, arriving late) makes the group's position in the router's memory again, with no
    row in the store; the next maintenance pass forgets it (and drops the emptied topic's
    row), and keeps the groups of the topics in use.
    """
    router = EmbeddedRouter(
        store,
        retention_seconds=3600,
        maintenance_interval_seconds=3600,
        position_flush_seconds=0.05,
        snapshots_of_subscriptions=True,  # as the server has it
    )
    await router.start()
    try:
        service = await open_service(store, InStoreOutlet(router))
        await service.subscribe("s", request("t", {"policy-id": "p"}))
        await service.subscribe("keeper", request("kept", {"policy-id": "p"}))
        for topic in ("t", "kept"):
            async with await router.read(topic, "g", "c", timeout=5, limit=10) as delivery:
                await delivery.ack()
        await service.unsubscribe("s")
        assert _groups(router) == {("kept", "g")}
        async with await router.read("t", "g", "c", timeout=0, limit=10) as delivery:
            assert list(delivery.messages) == []
        assert _groups(router) == {("kept", "g"), ("t", "g")}

        await router.maintain()
        assert _groups(router) == {("kept", "g")}
        with pytest.raises(NotFound):  # its row went too: the unsubscribe had emptied it
            await router.stats("t")
        if not store.shared:  # (there other replicas' announcements name topics too)
            assert "t" not in router._heads
        again = await service.subscribe("back", request("t", {"policy-id": "p"}))
        async with await router.read("t", "g", "c", timeout=5, limit=10) as delivery:
            [body] = delivery.messages
            assert orjson.loads(body)["revision"] == again.subscription.revision
            await delivery.ack()
    finally:
        await router.close()
