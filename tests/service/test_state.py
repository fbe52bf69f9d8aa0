"""The service's state and the store: loading it, and catching up when another service
instance on the same store changed it.
"""

from __future__ import annotations

import pytest

from policy_pubsub.service import PolicyService
from tests.conftest import wait_for
from tests.service.conftest import OpenStore, RecordingOutlet, open_service, request, tosca


async def test_a_new_instance_loads_what_the_store_holds(open_store: OpenStore) -> None:
    """A service started on a store holding policies and subscriptions starts at its
    revision with all of them, published marks included.
    """
    first = await open_service(await open_store(), RecordingOutlet())
    await first.subscribe("s", request("t", {"policy-id": "p"}))
    pushed = await first.deploy([tosca("p"), tosca("q")])

    second = await open_service(await open_store(), RecordingOutlet())
    assert second.revision == first.revision == pushed.revision
    assert [p.policy_id for p in await second.policies()] == ["p", "q"]
    [subscription] = await second.subscriptions()
    assert subscription == await first.subscription("s")
    assert subscription.last_revision == pushed.revision


async def test_a_write_catches_up_with_another_instance_first(open_store: OpenStore) -> None:
    """Changes made through another instance are taken in before a write: a subscribe sees
    the policies the other deployed, and the other's next push reaches that subscriber.
    """
    a_outlet, b_outlet = RecordingOutlet(), RecordingOutlet()
    a = await open_service(await open_store(), a_outlet)
    b = await open_service(await open_store(), b_outlet)
    deployed = await a.deploy([tosca("p1")])

    subscribed = await b.subscribe("s", request("t", {"policy-id": ["p1", "p2"]}))
    assert sorted(subscribed.policies) == ["p1"]
    assert subscribed.subscription.revision == deployed.revision + 1

    # (Each instance may also have taken in the other's commit in the background by now.)
    pushed = await a.deploy([tosca("p2")])
    assert pushed.notified == 1 and pushed.revision == subscribed.subscription.revision + 1
    [snapshot] = a_outlet.snapshots()
    assert snapshot["subscriber_id"] == "s" and sorted(snapshot["policies"]) == ["p1", "p2"]


async def test_reads_catch_up_with_another_instance_on_a_shared_store(
    open_store: OpenStore,
) -> None:
    """On a shared store (PostgreSQL) an instance's reads reflect another instance's commits
    without a write of its own.
    """
    store = await open_store()
    if not store.shared:
        pytest.skip("a SQLite store has one process: its reads catch up at its next write")
    a = await open_service(store, RecordingOutlet())
    b = await open_service(await open_store(), RecordingOutlet())
    await a.deploy([tosca("p1")])
    await a.subscribe("s", request("t", {"policy-id": "p1"}))

    async def b_caught_up() -> bool:
        await b.policies()  # a read: B takes in A's commits notified so far
        return b.revision == a.revision

    await wait_for(b_caught_up)
    assert [p.policy_id for p in await b.policies()] == ["p1"]
    assert [s.subscriber_id for s in await b.subscriptions()] == ["s"]


async def test_catch_up_does_nothing_when_nothing_changed(service: PolicyService) -> None:
    """Catching up with a store nobody else changed keeps the state as it is."""
    await service.deploy([tosca("p")])
    revision = service.revision
    await service.catch_up()
    assert service.revision == revision
    assert [p.policy_id for p in await service.policies()] == ["p"]
