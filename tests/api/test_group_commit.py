"""Group commit: PAP changes that queue up behind a transaction commit together, each with its
own revision and snapshots, each answered as if it had been alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from policy_pubsub.exceptions import StoreUnavailable
from policy_pubsub.service import PolicyService
from policy_pubsub.store import WriteTx
from tests.api.helpers import (
    PDP_UPDATE,
    POLICIES,
    TCA_TYPE,
    assert_no_message,
    poll,
    revision,
    subscribe,
    tosca,
)
from tests.conftest import LiveServer, wait_for

Send = Callable[[], Coroutine[Any, Any, httpx.Response]]


def _service(server: LiveServer) -> PolicyService:
    service: PolicyService = server.state.service
    return service


def _batches(server: LiveServer) -> tuple[float, float]:
    """(transactions, changes) counted by the changes-per-commit histogram."""
    registry = server.state.metrics.registry
    count = registry.get_sample_value("policy_pubsub_changes_per_commit_count") or 0.0
    total = registry.get_sample_value("policy_pubsub_changes_per_commit_sum") or 0.0
    return count, total


@asynccontextmanager
async def _queued(server: LiveServer, sends: list[Send]) -> AsyncIterator[list[asyncio.Task[Any]]]:
    """Hold the service's writer while the requests arrive, one after another in the given
    order, so that all of them wait for the same transaction; release it on leaving.
    """
    service = _service(server)
    tasks: list[asyncio.Task[Any]] = []
    async with service.writes_held():
        for n, send in enumerate(sends, start=1):
            tasks.append(asyncio.create_task(send()))
            await wait_for(lambda n=n: service.queued_changes == n)  # type: ignore[misc]
        yield tasks
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)


def _deploy(client: httpx.AsyncClient, *policies: dict[str, Any]) -> Send:
    return lambda: client.post(POLICIES, json={"policies": list(policies)})


def _undeploy(client: httpx.AsyncClient, policy_id: str) -> Send:
    return lambda: client.delete(f"{POLICIES}/{policy_id}")


async def test_queued_pushes_commit_together_with_a_revision_and_a_snapshot_each(
    server: LiveServer, client: httpx.AsyncClient
) -> None:
    """Ten pushes queued behind one transaction commit in one more: consecutive revisions in
    arrival order, and each snapshot holds exactly the policies deployed up to its revision.
    """
    await subscribe(client, "s1", "t1", [{"policy-type": [TCA_TYPE]}])
    await poll(client, "t1")
    start = revision(server)
    before = _batches(server)
    sends = [_deploy(client, tosca(f"p{i}")) for i in range(10)]
    async with _queued(server, sends) as tasks:
        pass
    answers = [task.result() for task in tasks]
    assert [a.status_code for a in answers] == [200] * 10
    assert [a.json()["revision"] for a in answers] == list(range(start + 1, start + 11))
    assert [a.json()["deployed"][0]["policy-id"] for a in answers] == [f"p{i}" for i in range(10)]
    assert all(a.json()["notified"] == 1 for a in answers)
    after = _batches(server)
    assert (after[0] - before[0], after[1] - before[1]) == (1, 10)
    snapshots = await poll(client, "t1")
    assert [s["revision"] for s in snapshots] == list(range(start + 1, start + 11))
    for i, snapshot in enumerate(snapshots):
        assert sorted(snapshot["policies"]) == sorted(f"p{j}" for j in range(i + 1))
    assert revision(server) == start + 10


async def test_each_queued_change_is_answered_on_its_own(
    server: LiveServer, client: httpx.AsyncClient
) -> None:
    """In one transaction: a deploy, its undeploy, an undeploy of nothing (404 for it alone),
    another deploy and a repeat of it (no change, the revision it saw). The store holds the
    net result, each revision its own snapshot.
    """
    await subscribe(client, "s1", "t1", [{"policy-type": [TCA_TYPE]}])
    await poll(client, "t1")
    start = revision(server)
    sends = [
        _deploy(client, tosca("p1")),
        _undeploy(client, "p1"),
        _undeploy(client, "nope"),
        _deploy(client, tosca("p2")),
        _deploy(client, tosca("p2")),
    ]
    async with _queued(server, sends) as tasks:
        pass
    deploy1, undeploy1, missing, deploy2, again = (task.result() for task in tasks)
    assert deploy1.status_code == 200
    assert deploy1.json()["revision"] == start + 1
    assert undeploy1.json() == {
        "revision": start + 2,
        "deployed": [],
        "undeployed": [{"policy-id": "p1", "policy-version": "1.0.0"}],
        "notified": 1,
    }
    assert missing.status_code == 404
    assert deploy2.json()["revision"] == start + 3
    assert again.json() == {"revision": start + 3, "deployed": [], "undeployed": [], "notified": 0}
    snapshots = await poll(client, "t1")
    assert [(s["revision"], sorted(s["policies"])) for s in snapshots] == [
        (start + 1, ["p1"]),
        (start + 2, []),
        (start + 3, ["p2"]),
    ]
    stored = await server.state.store.state.load()
    assert stored.revision == start + 3
    assert [(p.policy_id, p.revision) for p in stored.policies] == [("p2", start + 3)]
    listing = (await client.get(POLICIES)).json()["policies"]
    assert [p["policy-id"] for p in listing] == ["p2"]


async def test_a_complete_set_sees_the_changes_queued_before_it(
    server: LiveServer, client: httpx.AsyncClient
) -> None:
    """A complete-set PDP_UPDATE queued behind deploys replaces what they deployed too: the
    policies deployed earlier in the same transaction and not listed are undeployed.
    """
    await subscribe(client, "s1", "t1", [{"policy-type": [TCA_TYPE]}])
    await client.post(POLICIES, json={"policies": [tosca("p0")]})
    await poll(client, "t1")
    start = revision(server)
    update = {"messageName": "PDP_UPDATE", "requestId": "r1", "policies": [tosca("p9")]}
    sends = [
        _deploy(client, tosca("p1")),
        _deploy(client, tosca("p2")),
        lambda: client.post(PDP_UPDATE, json=update),
    ]
    async with _queued(server, sends) as tasks:
        pass
    answers = [task.result() for task in tasks]
    assert [a.json()["revision"] for a in answers] == [start + 1, start + 2, start + 3]
    assert {p["name"] for p in answers[2].json()["policies"]} == {"p9"}
    snapshots = await poll(client, "t1")
    assert [(s["revision"], sorted(s["policies"])) for s in snapshots] == [
        (start + 1, ["p0", "p1"]),
        (start + 2, ["p0", "p1", "p2"]),
        (start + 3, ["p9"]),
    ]
    listing = (await client.get(POLICIES)).json()["policies"]
    assert [p["policy-id"] for p in listing] == ["p9"]


async def test_a_failed_transaction_fails_every_queued_change_and_changes_nothing(
    server: LiveServer, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the store refuses the shared transaction, every change in it gets a 503, the
    revision and the policies stay as they were, no snapshot is published, and the next
    push after the store recovers commits normally.
    """
    await subscribe(client, "s1", "t1", [{"policy-type": [TCA_TYPE]}])
    await poll(client, "t1")
    start = revision(server)
    put_policies = WriteTx.put_policies

    async def refuse(self: WriteTx, rows: Any) -> None:
        raise StoreUnavailable("store write failed: disk I/O error")

    monkeypatch.setattr(WriteTx, "put_policies", refuse)
    sends = [_deploy(client, tosca(f"p{i}")) for i in range(3)]
    async with _queued(server, sends) as tasks:
        pass
    assert [task.result().status_code for task in tasks] == [503] * 3
    assert revision(server) == start
    assert (await client.get(POLICIES)).json()["policies"] == []
    assert (await server.state.store.state.load()).revision == start
    await assert_no_message(client, "t1")
    monkeypatch.setattr(WriteTx, "put_policies", put_policies)
    answer = await client.post(POLICIES, json={"policies": [tosca("p0")]})
    assert answer.json()["revision"] == start + 1
    assert [s["revision"] for s in await poll(client, "t1")] == [start + 1]
