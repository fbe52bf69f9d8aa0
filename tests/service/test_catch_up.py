"""Replicas on one store taking in each other's changes from the change log: exactly what a
full load gives, and a full load only when the log no longer reaches back.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy_pubsub.background import prune_change_log
from policy_pubsub.exceptions import NotFound
from policy_pubsub.matching import Selector
from policy_pubsub.models import PolicyFilter
from policy_pubsub.service import PolicyService, State
from policy_pubsub.service.snapshots import matching_policies
from policy_pubsub.store import Store, now_ms
from tests.api.helpers import TCA_TYPE
from tests.conftest import wait_for
from tests.service.conftest import OpenStore, RecordingOutlet, open_service, request, tosca

POLICY_IDS = ("p1", "p2", "p3")
SUBSCRIBERS = ("s1", "s2", "s3")
FILTERS: tuple[dict[str, Any], ...] = (
    {"policy-id": "p1"},
    {"policy-id": ["p1", "p2"]},
    {"policy-type": TCA_TYPE},
)

CHANGES = st.one_of(
    st.tuples(st.just("deploy"), st.sampled_from(POLICY_IDS), st.integers(1, 3)),
    st.tuples(st.just("undeploy"), st.sampled_from(POLICY_IDS)),
    st.tuples(st.just("subscribe"), st.sampled_from(SUBSCRIBERS), st.integers(0, 2)),
    st.tuples(st.just("unsubscribe"), st.sampled_from(SUBSCRIBERS)),
)
# Each step: which replica makes the change, the change, and whether both are then compared
# with a full load (reads catch up) or not (the other's next write catches up).
STEPS = st.lists(st.tuples(st.booleans(), CHANGES, st.booleans()), min_size=1, max_size=10)


class Reloads(logging.Handler):
    """Counts the full reloads the state logs."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "further back than its change log keeps" in record.getMessage():
            self.count += 1


@pytest.fixture
def reloads() -> Any:
    handler = Reloads()
    logger = logging.getLogger("policy_pubsub.service.state")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


async def _change(service: PolicyService, change: tuple[Any, ...]) -> None:
    try:
        match change:
            case ("deploy", policy_id, version):
                await service.deploy([tosca(policy_id, f"{version}.0.0")])
            case ("undeploy", policy_id):
                await service.undeploy(policy_id)
            case ("subscribe", subscriber_id, which):
                await service.subscribe(subscriber_id, request("t", FILTERS[which]))
            case ("unsubscribe", subscriber_id):
                await service.unsubscribe(subscriber_id)
    except NotFound:
        pass


async def _caught_up(service: PolicyService, store: Store) -> None:
    """Wait until the service's reads reflect the store's revision."""

    async def done() -> bool:
        await service.catch_up()
        return service.revision == await store.state.revision()

    await wait_for(done)


async def _assert_as_loaded(service: PolicyService, store: Store) -> None:
    """The service answers exactly as a state freshly loaded from the store does."""
    fresh = State(store)
    fresh._replace(await store.state.load())  # a full load, without following the store
    assert service.revision == fresh.revision
    policies = await service.policies()
    assert policies == sorted(fresh.deployed(), key=lambda p: p.policy_id)
    subscriptions = await service.subscriptions()
    assert subscriptions == sorted(fresh.subscriptions.values(), key=lambda s: s.subscriber_id)
    index = service._state.index  # the matching index, which no read exposes whole
    for subscriber_id in SUBSCRIBERS:
        assert index.selector_of(subscriber_id) == fresh.index.selector_of(subscriber_id)
    for wire in FILTERS:
        decided = await service.decide([PolicyFilter.model_validate(wire)])
        assert decided == matching_policies(fresh.policies, Selector.from_filters([wire]))


Replicas = tuple[tuple[PolicyService, Store], tuple[PolicyService, Store]]


@pytest.fixture
async def replicas(open_store: OpenStore) -> Replicas:
    """Two replicas of one store, each with its own engines and notifications."""
    store_a, store_b = await open_store(), await open_store()
    a = await open_service(store_a, RecordingOutlet())
    b = await open_service(store_b, RecordingOutlet())
    return (a, store_a), (b, store_b)


@pytest.mark.parametrize("settings", ["postgresql"], indirect=True)
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=STEPS)
async def test_replicas_take_in_each_others_changes_exactly(
    replicas: Replicas, reloads: Reloads, steps: list[tuple[bool, tuple[Any, ...], bool]]
) -> None:
    """Random changes on two replicas of one PostgreSQL store: after each, each replica, caught
    up by its reads or by its next write, answers as a full load of the store does, and
    neither ever reloads everything (the change log covers every gap).
    """
    # Shared by the examples: each starts where the one before ended.
    (a, _), (b, _) = replicas
    reloads.count = 0
    for on_a, change, compare in steps:
        await _change(a if on_a else b, change)
        if compare:
            for service, store in replicas:
                await _caught_up(service, store)
                await _assert_as_loaded(service, store)
    for service, store in replicas:
        await _caught_up(service, store)
        await _assert_as_loaded(service, store)
    assert reloads.count == 0


async def test_a_replica_behind_a_pruned_change_log_reloads_everything(
    open_store: OpenStore, reloads: Reloads
) -> None:
    """The change log keeps an hour; once pruned past a replica's revision, that replica
    reads everything again, once, and says so, on its next write (and, on a shared store, on
    its next read); after that, the log covers it again.
    """
    store_a, store_b = await open_store(), await open_store()
    a = await open_service(store_a, RecordingOutlet())
    b = await open_service(store_b, RecordingOutlet())
    await a.deploy([tosca("p1")])
    await a.subscribe("s1", request("t", {"policy-id": "p1"}))
    assert await prune_change_log(store_a) == 0  # kept an hour
    assert await store_a.state.prune_log(now_ms() + 1) == 2

    pushed = await b.deploy([tosca("p1", "2.0.0")])
    assert pushed.notified == 1  # the subscription made on A, known to B by the reload
    assert reloads.count == 1
    await _assert_as_loaded(b, store_b)

    await a.subscribe("s2", request("t", {"policy-id": "p2"}))
    assert (await b.deploy([tosca("p2")])).notified == 1
    assert reloads.count == 1  # logged since the pruning: taken in from the log
    await _assert_as_loaded(b, store_b)

    if store_a.shared:
        await a.undeploy("p1")
        await store_a.state.prune_log(now_ms() + 1)
        await _caught_up(b, store_b)
        assert reloads.count == 2
        await _assert_as_loaded(b, store_b)
