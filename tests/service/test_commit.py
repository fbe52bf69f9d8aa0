"""Group commit of policy changes, driven on the service core without HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest

from policy_pubsub.exceptions import NotFound
from policy_pubsub.metrics import Metrics
from policy_pubsub.models import PdpUpdate
from policy_pubsub.service import ChangeResult, PolicyService
from policy_pubsub.store import Store
from tests.api.helpers import TCA_TYPE
from tests.conftest import wait_for
from tests.service.conftest import RecordingOutlet, request, tosca


def _commits(metrics: Metrics) -> tuple[float, float]:
    """(transactions, changes) counted by the changes-per-commit histogram."""
    count = metrics.registry.get_sample_value("policy_pubsub_changes_per_commit_count") or 0.0
    total = metrics.registry.get_sample_value("policy_pubsub_changes_per_commit_sum") or 0.0
    return count, total


async def _queued(
    service: PolicyService, changes: list[Awaitable[ChangeResult]]
) -> list[ChangeResult | BaseException]:
    """Start the changes one after another while writes are held, so that all of them wait
    for the same transaction; then let it run and gather each one's result or failure.
    """
    tasks: list[asyncio.Task[ChangeResult]] = []
    async with service.writes_held():
        for n, change in enumerate(changes, start=1):
            tasks.append(asyncio.ensure_future(change))
            await wait_for(lambda n=n: service.queued_changes == n)  # type: ignore[misc]
    return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=30)


async def test_queued_changes_commit_in_one_transaction_with_a_revision_each(
    service: PolicyService, store: Store, outlet: RecordingOutlet, metrics: Metrics
) -> None:
    """Changes queued behind a held write commit in one transaction: consecutive revisions
    in arrival order, one snapshot each, each holding the policies deployed up to its revision.
    """
    await service.subscribe("s1", request("t1", {"policy-type": TCA_TYPE}))
    start = service.revision
    before = _commits(metrics)
    outlet.clear()

    results = await _queued(service, [service.deploy([tosca(f"p{i}")]) for i in range(5)])

    assert [r.revision for r in results if isinstance(r, ChangeResult)] == [
        start + i for i in range(1, 6)
    ]
    assert [r.notified for r in results if isinstance(r, ChangeResult)] == [1] * 5
    count, total = _commits(metrics)
    assert (count - before[0], total - before[1]) == (1, 5)
    assert len(outlet.writes) == 1 and len(outlet.handed_on) == 1
    snapshots = outlet.snapshots()
    assert [s["revision"] for s in snapshots] == [start + i for i in range(1, 6)]
    for i, snapshot in enumerate(snapshots):
        assert sorted(snapshot["policies"]) == [f"p{k}" for k in range(i + 1)]
    assert await store.state.revision() == start + 5 == service.revision


async def test_a_refused_change_does_not_stop_the_others_of_its_transaction(
    service: PolicyService, outlet: RecordingOutlet
) -> None:
    """Undeploying a policy that is not deployed fails alone; the changes queued around it
    commit, the one after it deploying on top of the one before.
    """
    start = service.revision
    results = await _queued(
        service,
        [service.deploy([tosca("a")]), service.undeploy("missing"), service.deploy([tosca("b")])],
    )
    first, refused, last = results
    assert isinstance(first, ChangeResult) and first.revision == start + 1
    assert isinstance(refused, NotFound)
    assert isinstance(last, ChangeResult) and last.revision == start + 2
    assert [p.policy_id for p in await service.policies()] == ["a", "b"]


async def test_a_change_that_changes_nothing_writes_nothing_and_notifies_nobody(
    service: PolicyService, store: Store, outlet: RecordingOutlet, metrics: Metrics
) -> None:
    """Deploying an identical policy again, or undeploying a version that is not the
    deployed one, takes no revision, writes nothing, hands nothing on, and answers with the
    store's revision.
    """
    await service.subscribe("s1", request("t1", {"policy-id": "p1"}))
    deployed = await service.deploy([tosca("p1")])
    outlet.clear()
    before = _commits(metrics)

    again = await service.deploy([tosca("p1")])
    assert again == ChangeResult(deployed.revision, [], [], 0)
    results = await _queued(service, [service.deploy([tosca("p1")]) for _ in range(3)])
    assert results == [ChangeResult(deployed.revision, [], [], 0)] * 3

    assert outlet.writes == [] and outlet.handed_on == []
    assert _commits(metrics) == before
    assert await store.state.revision() == deployed.revision == service.revision


async def test_an_unchanged_change_after_a_change_answers_with_the_revision_before_it(
    service: PolicyService,
) -> None:
    """In one transaction, a change that changes nothing answers with the revision the
    changes before it reached.
    """
    start = service.revision
    results = await _queued(service, [service.deploy([tosca("p")]), service.deploy([tosca("p")])])
    assert results == [
        ChangeResult(start + 1, [{"policy-id": "p", "policy-version": "1.0.0"}], [], 0),
        ChangeResult(start + 1, [], [], 0),
    ]


async def test_undeploy_of_an_unknown_policy_is_not_found_and_writes_nothing(
    service: PolicyService, store: Store, outlet: RecordingOutlet
) -> None:
    """``undeploy`` of a policy that is not deployed raises NotFound and takes no revision."""
    start = service.revision
    with pytest.raises(NotFound):
        await service.undeploy("missing")
    assert outlet.handed_on == []
    assert await store.state.revision() == start == service.revision


async def test_a_complete_set_replaces_every_other_policy(
    service: PolicyService, outlet: RecordingOutlet
) -> None:
    """A PDP_UPDATE with the complete set undeploys what it leaves out, in one revision, and
    the subscriber of an undeployed policy gets a snapshot without it.
    """
    await service.deploy([tosca("keep"), tosca("drop")])
    await service.subscribe("s1", request("t1", {"policy-id": ["drop", "keep"]}))
    outlet.clear()
    update = PdpUpdate.model_validate(
        {"messageName": "PDP_UPDATE", "policies": [tosca("keep").model_dump(by_alias=True)]}
    )
    result = await service.pdp_update(update)
    assert result.deployed == [] and result.undeployed == [
        {"policy-id": "drop", "policy-version": "1.0.0"}
    ]
    [snapshot] = outlet.snapshots()
    assert snapshot["revision"] == result.revision and sorted(snapshot["policies"]) == ["keep"]
