"""Snapshots larger than the router's largest message: the change that would cause one is
refused before anything is written, and never holds up the changes around it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest

from policy_pubsub.exceptions import SnapshotTooLarge
from policy_pubsub.metrics import Metrics
from policy_pubsub.models import PdpUpdate
from policy_pubsub.service import ChangeResult, PolicyService
from policy_pubsub.store import Store
from tests.conftest import wait_for
from tests.service.conftest import RecordingOutlet, open_service, request, tosca

LIMIT = 4096
BIG = 2 * LIMIT  # padding that makes a policy's snapshot larger than LIMIT


@pytest.fixture
async def service(store: Store, outlet: RecordingOutlet, metrics: Metrics) -> PolicyService:
    """A service whose router carries messages of at most ``LIMIT`` bytes."""
    return await open_service(store, outlet, metrics, max_message_bytes=LIMIT)


async def _queued(
    service: PolicyService, changes: list[Awaitable[ChangeResult]]
) -> list[ChangeResult | BaseException]:
    """Queue the changes behind a held write so that they commit in one transaction."""
    tasks: list[asyncio.Task[ChangeResult]] = []
    async with service.writes_held():
        for n, change in enumerate(changes, start=1):
            tasks.append(asyncio.ensure_future(change))
            await wait_for(lambda n=n: service.queued_changes == n)  # type: ignore[misc]
    return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=30)


async def test_a_deploy_whose_snapshot_is_too_large_is_refused_and_writes_nothing(
    service: PolicyService, store: Store, outlet: RecordingOutlet
) -> None:
    """Deploying a policy that makes A's snapshot larger than the router's largest message
    raises SnapshotTooLarge naming A, the size and the limit; no revision, no policy, no
    snapshot; B's deploy after it is delivered.
    """
    await service.subscribe("a", request("ta", {"policy-id": "big"}))
    await service.subscribe("b", request("tb", {"policy-id": "small"}))
    start = service.revision
    outlet.clear()

    with pytest.raises(SnapshotTooLarge) as refused:
        await service.deploy([tosca("big", padding=BIG)])
    assert refused.value.subscriber_ids == ["a"]
    assert refused.value.size > LIMIT and refused.value.limit == LIMIT
    assert "subscriber a " in refused.value.message and str(LIMIT) in refused.value.message
    assert outlet.writes == [] and outlet.handed_on == []
    assert await store.state.revision() == start == service.revision
    assert await service.policies() == []

    result = await service.deploy([tosca("small")])
    assert result.revision == start + 1 and result.notified == 1
    [snapshot] = outlet.snapshots()
    assert snapshot["subscriber_id"] == "b" and list(snapshot["policies"]) == ["small"]


async def test_a_refused_change_in_a_batch_leaves_the_others_committed(
    service: PolicyService, store: Store, outlet: RecordingOutlet
) -> None:
    """In one transaction, an oversize replacement of ``x`` is refused alone: the change
    before it and the one after it commit with consecutive revisions, and the one after sees
    ``x`` as it was deployed, not as the refused change would have left it.
    """
    await service.subscribe("s", request("t", {"policy-id": ["x", "y", "z"]}))
    await service.deploy([tosca("x")])
    start = service.revision
    outlet.clear()

    before, refused, after = await _queued(
        service,
        [
            service.deploy([tosca("y")]),
            service.deploy([tosca("x", "2.0.0", padding=BIG)]),
            service.deploy([tosca("z")]),
        ],
    )

    assert isinstance(before, ChangeResult) and before.revision == start + 1
    assert isinstance(refused, SnapshotTooLarge) and refused.subscriber_ids == ["s"]
    assert isinstance(after, ChangeResult) and after.revision == start + 2
    assert len(outlet.writes) == 1
    last = outlet.snapshots()[-1]
    assert last["revision"] == start + 2 and sorted(last["policies"]) == ["x", "y", "z"]
    assert last["policies"]["x"]["version"] == "1.0.0"
    assert await store.state.revision() == start + 2 == service.revision
    assert {p.policy_id: p.version for p in await service.policies()} == {
        "x": "1.0.0",
        "y": "1.0.0",
        "z": "1.0.0",
    }


async def test_a_batch_refused_whole_takes_no_revision(
    service: PolicyService, store: Store, outlet: RecordingOutlet
) -> None:
    """A transaction whose every change is refused rolls back: nothing written or handed on."""
    await service.subscribe("s", request("t", {"policy-id": ["p", "q"]}))
    start = service.revision
    outlet.clear()
    results = await _queued(
        service,
        [service.deploy([tosca("p", padding=BIG)]), service.deploy([tosca("q", padding=BIG)])],
    )
    assert all(isinstance(r, SnapshotTooLarge) for r in results)
    assert outlet.writes == [] and outlet.handed_on == []
    assert await store.state.revision() == start == service.revision


async def test_a_pdp_update_whose_snapshot_is_too_large_is_refused(
    service: PolicyService, store: Store
) -> None:
    """A PDP_UPDATE is refused like any change: SnapshotTooLarge, nothing deployed."""
    await service.subscribe("s", request("t", {"policy-id": "big"}))
    start = service.revision
    update = PdpUpdate.model_validate(
        {
            "messageName": "PDP_UPDATE",
            "policiesToBeDeployed": [tosca("big", padding=BIG).model_dump(by_alias=True)],
        }
    )
    with pytest.raises(SnapshotTooLarge):
        await service.pdp_update(update)
    assert await store.state.revision() == start and await service.policies() == []


async def test_a_subscribe_whose_first_snapshot_is_too_large_is_refused(
    service: PolicyService, store: Store, outlet: RecordingOutlet
) -> None:
    """A subscription whose starting snapshot is too large is not stored, takes no revision
    and publishes nothing; a subscriber the same policy does not reach is unaffected.
    """
    deployed = await service.deploy([tosca("big", padding=BIG)])  # nobody subscribes to it yet
    outlet.clear()

    with pytest.raises(SnapshotTooLarge) as refused:
        await service.subscribe("a", request("ta", {"policy-id": "big"}))
    assert refused.value.subscriber_ids == ["a"]
    assert outlet.writes == []
    assert await store.state.revision() == deployed.revision == service.revision
    assert await service.subscriptions() == []

    await service.subscribe("b", request("tb", {"policy-id": "other"}))
    assert [s["subscriber_id"] for s in outlet.snapshots()] == ["b"]


async def test_the_refusal_names_a_few_subscribers_and_counts_the_rest(
    service: PolicyService,
) -> None:
    """Seven subscribers over the limit: the message names five (sorted) and "2 more", the
    exception carries all seven.
    """
    for n in range(7):
        await service.subscribe(f"s{n}", request(f"t{n}", {"policy-id": "big"}))
    with pytest.raises(SnapshotTooLarge) as refused:
        await service.deploy([tosca("big", padding=BIG)])
    assert refused.value.subscriber_ids == [f"s{n}" for n in range(7)]
    assert "subscribers s0, s1, s2, s3, s4 and 2 more would be" in refused.value.message
