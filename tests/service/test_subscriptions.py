"""Subscribe, unsubscribe, and the snapshots they and policy changes cause, driven on the
service core without HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest

from policy_pubsub.exceptions import NotFound, SubscriptionTaken
from policy_pubsub.metrics import Metrics
from policy_pubsub.models import PolicyFilter
from policy_pubsub.service import PolicyService, State
from policy_pubsub.store import Store, now_ms
from tests.api.helpers import TCA_TYPE
from tests.conftest import wait_for
from tests.service.conftest import RecordingOutlet, request, tosca

OTHER_TYPE = "onap.policies.controlloop.operational.common.Drools"


async def test_subscribe_publishes_a_snapshot_of_the_matching_policies(
    service: PolicyService, outlet: RecordingOutlet
) -> None:
    """A new subscription takes a revision and gets one ``subscribe`` snapshot: its record,
    that revision, and exactly the deployed policies its filters match, by policy id.
    """
    await service.deploy(
        [
            tosca("onap.restart.tca"),
            tosca("onap.scaleout.tca"),
            tosca("other", policy_type=OTHER_TYPE),
        ]
    )
    outlet.clear()
    result = await service.subscribe(
        "tca-1",
        request(
            "topic-1",
            {"policy-id": ["onap.restart.tca", "missing"]},
            {"policy-type": "onap.policies.monitoring.*"},
        ),
    )
    assert result.created
    assert sorted(result.policies) == ["onap.restart.tca", "onap.scaleout.tca"]
    assert result.subscription.revision == service.revision
    [[message]] = outlet.handed_on
    assert (message.topic, message.key, message.revision) == ("topic-1", "tca-1", service.revision)
    assert message.dedup_id == f"tca-1@{service.revision}"
    [snapshot] = outlet.snapshots()
    assert snapshot["subscriber_id"] == "tca-1"
    assert snapshot["subscriber_topic"] == "topic-1"
    assert snapshot["ONAPName"] == "DCAE"
    assert snapshot["event"] == "subscribe" and snapshot["revision"] == service.revision
    assert snapshot["timestamp"].endswith("Z")
    assert snapshot["policies"] == result.policies
    assert snapshot["policies"]["onap.restart.tca"]["metadata"]["policy-id"] == "onap.restart.tca"


async def test_a_push_notifies_exactly_the_matching_subscribers(
    service: PolicyService, outlet: RecordingOutlet
) -> None:
    """A push sends an ``update`` snapshot, with all of its policies, to each subscriber whose
    filters match the pushed policy, subscribers with the same filters each their own, and
    nothing to the others.
    """
    await service.deploy([tosca("base")])
    await service.subscribe("a", request("ta", {"policy-type": TCA_TYPE}))
    await service.subscribe("b", request("tb", {"policy-type": TCA_TYPE}))
    await service.subscribe("c", request("tc", {"policy-id": "new"}))
    await service.subscribe("d", request("td", {"policy-type": OTHER_TYPE}))
    outlet.clear()

    result = await service.deploy([tosca("new")])

    assert result.notified == 3
    snapshots = {s["subscriber_id"]: s for s in outlet.snapshots()}
    assert sorted(snapshots) == ["a", "b", "c"]
    assert {s["event"] for s in snapshots.values()} == {"update"}
    assert {s["revision"] for s in snapshots.values()} == {result.revision}
    assert sorted(snapshots["a"]["policies"]) == ["base", "new"]
    assert snapshots["a"]["policies"] == snapshots["b"]["policies"]
    assert sorted(snapshots["c"]["policies"]) == ["new"]
    # a and b's snapshots end alike: they say so, and c's, alone with its filters, does not
    shared = {m.key: m.shared for batch in outlet.handed_on for m in batch}
    assert shared["a"] is not None and shared["a"] == shared["b"] and shared["c"] is None
    ends = {m.key: m.body.endswith(shared["a"].text) for batch in outlet.handed_on for m in batch}
    assert ends == {"a": True, "b": True, "c": False}
    subscription = await service.subscription("a")
    assert subscription.last_revision == result.revision
    assert (await service.subscription("d")).last_revision != result.revision


async def test_undeploy_sends_snapshots_without_the_policy(
    service: PolicyService, outlet: RecordingOutlet
) -> None:
    """Undeploying a policy notifies its subscribers with a snapshot that no longer holds it."""
    await service.deploy([tosca("p1"), tosca("p2")])
    await service.subscribe("s", request("t", {"policy-id": ["p1", "p2"]}))
    outlet.clear()
    result = await service.undeploy("p1")
    assert result.undeployed == [{"policy-id": "p1", "policy-version": "1.0.0"}]
    [snapshot] = outlet.snapshots()
    assert sorted(snapshot["policies"]) == ["p2"]


async def test_subscribe_again_updates_and_keeps_the_creation_time(
    service: PolicyService, outlet: RecordingOutlet
) -> None:
    """Subscribing an existing subscriber id replaces its topic and filters, keeps when it
    was created, and its next snapshot follows the new filters.
    """
    first = await service.subscribe("s", request("t1", {"policy-id": "p1"}))
    again = await service.subscribe("s", request("t2", {"policy-id": "p2"}))
    assert not again.created
    assert again.subscription.created_at == first.subscription.created_at
    assert again.subscription.revision == first.subscription.revision + 1
    assert [s.topic for s in await service.subscriptions()] == ["t2"]
    outlet.clear()
    await service.deploy([tosca("p1")])
    assert outlet.snapshots() == []
    await service.deploy([tosca("p2")])
    assert [(s["subscriber_topic"], sorted(s["policies"])) for s in outlet.snapshots()] == [
        ("t2", ["p2"])
    ]


async def test_unsubscribe_removes_the_subscription_and_its_snapshots_stop(
    service: PolicyService, store: Store, outlet: RecordingOutlet
) -> None:
    """Unsubscribe takes a revision and publishes nothing; the subscription is gone from the
    reads, and the next push notifies nobody.
    """
    await service.subscribe("s", request("t", {"policy-id": "p"}))
    outlet.clear()
    revision = await service.unsubscribe("s")
    assert revision == service.revision == await store.state.revision()
    assert outlet.handed_on == []
    with pytest.raises(NotFound):
        await service.subscription("s")
    assert await service.subscriptions() == []
    assert (await service.deploy([tosca("p")])).notified == 0
    assert outlet.snapshots() == []


async def test_unsubscribe_of_an_unknown_subscriber_is_not_found_and_writes_nothing(
    service: PolicyService, store: Store
) -> None:
    """Unsubscribing an unknown subscriber id raises NotFound and takes no revision."""
    start = service.revision
    with pytest.raises(NotFound):
        await service.unsubscribe("nobody")
    assert await store.state.revision() == start == service.revision


async def test_reads_list_subscriptions_and_decide(service: PolicyService) -> None:
    """Subscriptions are listed by id, all or on one topic; ``decide`` returns the policies
    any of several filters match.
    """
    await service.deploy([tosca("p1"), tosca("p2"), tosca("x", policy_type=OTHER_TYPE)])
    await service.subscribe("b", request("shared", {"policy-id": "p1"}))
    await service.subscribe("a", request("shared", {"policy-id": "p2"}))
    await service.subscribe("c", request("own", {"policy-id": "x"}))
    assert [s.subscriber_id for s in await service.subscriptions()] == ["a", "b", "c"]
    assert [s.subscriber_id for s in await service.subscriptions("shared")] == ["a", "b"]
    filters = [
        PolicyFilter.model_validate({"policy-id": "p1"}),
        PolicyFilter.model_validate({"policy-type": OTHER_TYPE}),
    ]
    assert sorted(await service.decide(filters)) == ["p1", "x"]
    assert (await service.policy("p2")).policy_id == "p2"
    with pytest.raises(NotFound):
        await service.policy("nope")


async def test_queued_subscribes_and_unsubscribes_share_one_commit(
    service: PolicyService, store: Store, outlet: RecordingOutlet, metrics: Metrics
) -> None:
    """Subscribes and unsubscribes queued behind a held write commit in one transaction, each
    with its own revision in arrival order, its own snapshot and answer; a refused one takes
    no revision, and one made and removed in the same transaction is gone.
    """
    await service.deploy([tosca("p1"), tosca("p2")])
    await service.subscribe("old", request("t", {"policy-id": "p1"}))
    start = service.revision
    commits = metrics.registry.get_sample_value("policy_pubsub_commit_seconds_count")
    outlet.clear()

    def refuse(_topic: str) -> bool:
        return False

    requests: list[Awaitable[Any]] = [
        service.subscribe(f"s{i}", request(f"t{i}", {"policy-id": f"p{i % 2 + 1}"}))
        for i in range(20)
    ]
    requests += [
        service.unsubscribe("old"),
        service.subscribe("s0", request("t-other", {"policy-id": "p1"}), refuse),
        service.subscribe("gone", request("t", {"policy-id": "p1"})),
        service.unsubscribe("gone"),
    ]
    tasks: list[asyncio.Future[Any]] = []
    async with service.writes_held():
        for n, awaitable in enumerate(requests, start=1):
            tasks.append(asyncio.ensure_future(awaitable))
            await wait_for(lambda n=n: service.queued_subscription_changes == n)  # type: ignore[misc]
    answers = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=30)

    assert metrics.registry.get_sample_value("policy_pubsub_commit_seconds_count") == commits + 1
    subscribed = answers[:20]
    assert [a.subscription.revision for a in subscribed] == [start + i for i in range(1, 21)]
    assert [sorted(a.policies) for a in subscribed] == [[f"p{i % 2 + 1}"] for i in range(20)]
    assert answers[20] == start + 21
    assert isinstance(answers[21], SubscriptionTaken)
    assert answers[22].subscription.revision == start + 22 and answers[23] == start + 23
    assert len(outlet.handed_on) == 1
    assert [(s["subscriber_id"], s["revision"]) for s in outlet.snapshots()] == [
        *((f"s{i}", start + i + 1) for i in range(20)),
        ("gone", start + 22),
    ]
    assert service.revision == await store.state.revision() == start + 23
    listed = await service.subscriptions()
    assert [s.subscriber_id for s in listed] == sorted(f"s{i}" for i in range(20))
    loaded = {r.subscriber_id: r for r in (await store.state.load()).subscriptions}
    for subscription in listed:
        row = loaded[subscription.subscriber_id]
        assert (row.revision, row.last_revision) == (subscription.revision,) * 2


async def test_a_subscription_left_and_made_again_in_one_commit_is_stored_as_new(
    service: PolicyService, store: Store
) -> None:
    """Unsubscribing and subscribing the same id again, committed together, makes a new
    subscription in memory and in the store alike: the same creation time, the same mark.
    """
    first = await service.subscribe("s1", request("t1", {"policy-type": TCA_TYPE}))
    created = first.subscription.created_at
    await wait_for(lambda: now_ms() > created)  # a new subscription gets a later time
    async with service._state.writing:  # both requests queue behind it: one commit
        leaving = asyncio.create_task(service.unsubscribe("s1"))
        coming = asyncio.create_task(service.subscribe("s1", request("t2", {"policy-id": "p"})))
        await wait_for(lambda: service._subscriptions.queued == 2)
    await leaving
    again = await coming
    assert again.created
    assert again.subscription.created_at > created
    fresh = State(store)
    fresh._replace(await store.state.load())
    assert await service.subscriptions() == [fresh.subscriptions["s1"]]
