"""Replicas on one store taking in each other's changes from the change log: exactly what a
full load gives, and a full load only when the log no longer reaches back.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from policy_pubsub.background import prune_change_log
from policy_pubsub.exceptions import NotFound, StoreUnavailable
from policy_pubsub.matching import Selector
from policy_pubsub.models import PolicyFilter
from policy_pubsub.service import PolicyService, State
from policy_pubsub.service.snapshots import matching_policies
from policy_pubsub.store import Store, now_ms
from policy_pubsub.store.tables import change_log, mark_log
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
    # Each listens, and has done the catch-up its listening starts, before the test begins: a
    # catch-up still reading when a test commits could take that commit in unannounced.
    for service, store in ((a, store_a), (b, store_b)):
        await wait_for(lambda service=service, store=store: _listening(service, store))
    return (a, store_a), (b, store_b)


def _listening(service: PolicyService, store: Store) -> bool:
    following = service._state._following
    notifications = store.notifications
    return (
        (notifications is None or notifications.connected)
        and not service._state.behind
        and (following is None or following.done())
    )


@pytest.mark.parametrize("settings", ["sqlite"], indirect=True)
async def test_a_sqlite_store_keeps_no_change_log_and_another_writer_means_a_reload(
    open_store: OpenStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A SQLite store has one process, which holds every change in memory: its writes log
    nothing for replicas (no change log, no mark log). A second process that wrote to the
    same file meanwhile is taken in by reading the store again, once per gap, and said so.
    """
    store_a, store_b = await open_store(), await open_store()
    a = await open_service(store_a, RecordingOutlet())
    b = await open_service(store_b, RecordingOutlet())
    await a.subscribe("s1", request("t", {"policy-id": ["p1", "p2"]}))
    assert (await a.deploy([tosca("p1")])).notified == 1
    async with store_a.read() as conn:
        for table in (change_log, mark_log):
            assert (await conn.execute(select(func.count()).select_from(table))).scalar() == 0
    caplog.set_level(logging.INFO, "policy_pubsub.service.state")
    pushed = await b.deploy([tosca("p2")])
    assert pushed.notified == 1  # the subscription made by A, taken in by the reload
    assert caplog.text.count("written by another process") == 1
    await _assert_as_loaded(b, store_b)
    assert (await a.undeploy("p1")).notified == 1  # A takes in B's push the same way
    await _assert_as_loaded(a, store_a)


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
    reads everything again, once, and says so, when it next catches up (its next write; on a
    shared store also its next notification or read); after that, the log covers it again.
    B is kept from following A (its write lock held) while the log is pruned past it.
    """
    store_a, store_b = await open_store(), await open_store()
    if not store_a.shared:
        pytest.skip("a SQLite store keeps no change log: see the test below")
    a = await open_service(store_a, RecordingOutlet())
    b = await open_service(store_b, RecordingOutlet())
    async with b._state.writing:  # B does not follow A meanwhile
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
        async with b._state.writing:
            await a.undeploy("p1")
            await store_a.state.prune_log(now_ms() + 1)
        await _caught_up(b, store_b)
        assert reloads.count == 2
        await _assert_as_loaded(b, store_b)


@pytest.mark.parametrize("settings", ["postgresql"], indirect=True)
async def test_a_notification_makes_a_replica_current_without_a_read(
    replicas: Replicas,
) -> None:
    """A change on A reaches B's indexes by B's background catch-up alone: no read on B."""
    (a, _), (b, store_b) = replicas
    await a.subscribe("s1", request("t", {"policy-id": "p1"}))
    pushed = await a.deploy([tosca("p1")])
    state = b._state
    await wait_for(lambda: state.revision == pushed.revision)
    assert state.reads["read"] == 0
    assert state.reads["background"] >= 1
    assert state.subscriptions["s1"].last_revision == pushed.revision  # the mark moved too
    await _assert_as_loaded(b, store_b)


@pytest.mark.parametrize("settings", ["postgresql"], indirect=True)
async def test_reads_during_a_catch_up_wait_for_it(replicas: Replicas) -> None:
    """Reads that come while B's catch-up waits (here, for B's write lock) wait for it and
    answer what it took in; none of them reads the store itself.
    """
    (a, _), (b, _) = replicas
    state = b._state
    filters = [PolicyFilter.model_validate({"policy-id": "p1"})]
    async with state.writing:
        pushed = await a.deploy([tosca("p1")])
        await wait_for(lambda: state._following is not None and not state._following.done())
        before = dict(state.reads)
        readers = [asyncio.create_task(b.decide(filters)) for _ in range(3)]
        for _ in range(10):
            await asyncio.sleep(0)
        assert not any(reader.done() for reader in readers)
    decided = await asyncio.gather(*readers)
    assert all(list(d) == ["p1"] for d in decided)
    assert state.revision == pushed.revision
    assert state.reads == {"background": before["background"] + 1, "read": before["read"]}


@pytest.mark.parametrize("settings", ["postgresql"], indirect=True)
async def test_a_failed_background_catch_up_leaves_reads_to_catch_up(
    replicas: Replicas, caplog: pytest.LogCaptureFixture
) -> None:
    """When the background catch-up cannot read the store, it says so once, and the next
    read on that replica catches up itself.
    """
    (a, _), (b, store_b) = replicas
    state = b._state
    since = store_b.state.since
    failing = True

    async def flaky(revision: int) -> Any:
        if failing:
            raise StoreUnavailable("store read failed: test")
        return await since(revision)

    store_b.state.since = flaky  # type: ignore[method-assign]
    caplog.set_level(logging.WARNING, "policy_pubsub.service.state")
    first = await a.deploy([tosca("p1")])
    await wait_for(lambda: state.behind and state._unsure)
    second = await a.deploy([tosca("p2")])
    await wait_for(lambda: state._notified >= second.revision)
    await wait_for(lambda: state._following is None or state._following.done())
    failures = [r for r in caplog.records if "catching up with the store failed" in r.message]
    assert len(failures) == 1
    assert state.revision < first.revision
    failing = False
    await b.catch_up()
    assert state.revision == second.revision
    assert state.reads["read"] == 1


BATCHES = st.lists(st.lists(st.tuples(st.booleans(), CHANGES), min_size=1, max_size=4), max_size=4)


@pytest.mark.parametrize("settings", ["postgresql"], indirect=True)
@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=BATCHES, reads=st.integers(0, 3))
async def test_concurrent_changes_and_reads_leave_both_replicas_as_loaded(
    replicas: Replicas, batches: list[list[tuple[bool, tuple[Any, ...]]]], reads: int
) -> None:
    """Changes sent to both replicas at once, with reads on both among them, interleave
    with the background catch-ups: every revision a replica shows is one it reached in order,
    and once quiet both answer as a full load of the store does.
    """
    (a, _), (b, _) = replicas
    seen: dict[int, list[int]] = {id(a): [], id(b): []}
    filters = [PolicyFilter.model_validate(FILTERS[2])]

    async def read(service: PolicyService) -> None:
        await service.decide(filters)
        seen[id(service)].append(service.revision)

    for batch in batches:
        work = [_change(a if on_a else b, change) for on_a, change in batch]
        work += [read(a if i % 2 else b) for i in range(reads)]
        await asyncio.gather(*work)
    for service, store in replicas:
        await _caught_up(service, store)
        await _assert_as_loaded(service, store)
    for revisions in seen.values():
        assert revisions == sorted(revisions)  # a replica never goes back
