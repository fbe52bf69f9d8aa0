"""The outbox and its relay with live routers outside the store: snapshots delivered once the
router is up.

The external routers here are a DMaaP Message Router (a second instance of our own server)
and NATS JetStream (a private nats-server, stopped and started by the test).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from policy_pubsub.client import PolicyChange, PolicySubscriber
from tests.client.conftest import fast
from tests.conftest import (
    LiveServer,
    make_settings,
    postgres_database,
    start_server,
    stop_server,
    wait_for,
)
from tests.nats_server import PrivateNats


@dataclass
class Setup:
    """A Message Router (our server) and a server that publishes to it through its outbox."""

    mr: LiveServer
    mr_task: asyncio.Task[None]
    server: LiveServer


@pytest.fixture(params=["sqlite", "postgresql"])
async def setup(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Setup]:
    (tmp_path / "mr").mkdir()
    (tmp_path / "pp").mkdir()
    mr, mr_task = await start_server(make_settings(tmp_path / "mr"))
    try:
        async with AsyncExitStack() as stack:
            overrides: dict[str, Any] = {"router_url": f"dmaap+{mr.url}"}
            if request.param == "postgresql":
                overrides["database_url"] = await stack.enter_async_context(postgres_database())
            live, task = await start_server(make_settings(tmp_path / "pp", **overrides))
            made = Setup(mr, mr_task, live)
            try:
                yield made
            finally:
                await stop_server(live, task)
    finally:
        if not made.mr_task.done():
            await stop_server(made.mr, made.mr_task)


def _policy(policy_id: str, version: int) -> dict[str, Any]:
    return {
        "type": "onap.test",
        "name": policy_id,
        "version": f"{version}.0.0",
        "metadata": {"policy-id": policy_id, "policy-version": f"{version}.0.0"},
    }


async def _outbox(http: httpx.AsyncClient, server: LiveServer) -> dict[str, Any]:
    details: dict[str, Any] = (await http.get(f"{server.url}/healthcheck")).json()["details"]
    outbox: dict[str, Any] = details["outbox"]
    return outbox


async def _snapshots(http: httpx.AsyncClient, mr: LiveServer, topic: str) -> list[dict[str, Any]]:
    r = await http.get(f"{mr.url}/events/{topic}/check/c", params={"timeout": 0, "limit": 10000})
    assert r.status_code == 200, r.text
    return [json.loads(m) for m in r.json()]


async def test_snapshots_reach_the_external_router(setup: Setup) -> None:
    """A push puts the subscriber's new snapshot on its topic at the MR."""
    mr, server = setup.mr, setup.server
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(
            f"{server.url}/decision/v1/subscription/s1",
            json={"subscriber_topic": "t1", "policy-filters": [{"policy-id": "p*"}]},
        )
        assert r.status_code == 201
        r = await http.post(f"{server.url}/pap/v1/policies", json={"policies": [_policy("p1", 1)]})
        assert r.json()["notified"] == 1
        await wait_for(lambda: _drained(http, server), timeout=10)
        snapshots = await _snapshots(http, mr, "t1")
    # The relay may skip the subscribe snapshot if the update superseded it in one batch.
    assert [s["revision"] for s in snapshots] == sorted({s["revision"] for s in snapshots})
    assert (snapshots[-1]["event"], list(snapshots[-1]["policies"])) == ("update", ["p1"])


async def _drained(http: httpx.AsyncClient, server: LiveServer) -> bool:
    return (await _outbox(http, server))["depth"] == 0


async def test_pushes_are_acknowledged_while_the_router_is_down_and_flow_when_it_is_back(
    setup: Setup,
) -> None:
    """With the MR down, pushes still succeed and wait in the outbox; once the MR is back
    they are delivered, each subscriber's snapshots in revision order, ending in the newest.
    """
    mr, server = setup.mr, setup.server
    async with httpx.AsyncClient(timeout=30) as http:
        for name in ("s1", "s2"):
            r = await http.post(
                f"{server.url}/decision/v1/subscription/{name}",
                json={"subscriber_topic": "shared", "policy-filters": [{"policy-id": "p*"}]},
            )
            assert r.status_code == 201
        await wait_for(lambda: _drained(http, server), timeout=10)
        port = int(mr.url.rsplit(":", 1)[1])
        await stop_server(mr, setup.mr_task)

        revisions = []
        for version in range(1, 6):
            r = await http.post(
                f"{server.url}/pap/v1/policies", json={"policies": [_policy("p1", version)]}
            )
            assert r.status_code == 200, r.text
            revisions.append(r.json()["revision"])
        outbox = await _outbox(http, server)
        assert outbox["depth"] == 10
        assert outbox["relay_error"] is not None

        setup.mr, setup.mr_task = await start_server(mr.settings.model_copy(update={"port": port}))
        await wait_for(lambda: _drained(http, server), timeout=20)
        snapshots = await _snapshots(http, setup.mr, "shared")
    for name in ("s1", "s2"):
        mine = [s for s in snapshots if s["subscriber_id"] == name]
        seen = [s["revision"] for s in mine]
        assert seen == sorted(set(seen)), seen
        assert seen[-1] == revisions[-1]
        assert mine[-1]["policies"]["p1"]["version"] == "5.0.0"


async def test_nats_down_then_back_delivers_every_snapshot_in_order(
    tmp_path: Path, private_nats: PrivateNats
) -> None:
    """With the NATS broker stopped, pushes are acknowledged and wait in the outbox; after it
    restarts they are published, and each subscriber reads its snapshots in revision order
    through the server's /events, the last one holding the newest policy.
    """
    broker = private_nats
    settings = make_settings(tmp_path, router_url=broker.url)
    server, task = await start_server(settings)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            for name in ("s1", "s2"):
                r = await http.post(
                    f"/decision/v1/subscription/{name}",
                    json={
                        "subscriber_topic": "shared",
                        "policy-filters": [{"policy-id": "p*"}],
                    },
                )
                assert r.status_code == 201, r.text
            await wait_for(lambda: _drained(http, server), timeout=10)
            await broker.stop()
            revisions = []
            for version in range(1, 6):
                r = await http.post("/pap/v1/policies", json={"policies": [_policy("p1", version)]})
                assert r.status_code == 200, r.text
                revisions.append(r.json()["revision"])
            assert (await _outbox(http, server))["depth"] == 10
            await broker.start()
            await wait_for(lambda: _drained(http, server), timeout=30)
            r = await http.get("/events/shared/check/c", params={"timeout": 0, "limit": 1000})
            snapshots = [json.loads(m) for m in r.json()]
    finally:
        await stop_server(server, task)
    for name in ("s1", "s2"):
        seen = [s["revision"] for s in snapshots if s["subscriber_id"] == name]
        assert seen == sorted(set(seen)), seen
        assert seen[-1] == revisions[-1]
    newest = [s for s in snapshots if s["revision"] == revisions[-1]]
    assert {s["policies"]["p1"]["version"] for s in newest} == {"5.0.0"}


async def test_a_component_reading_the_mr_sees_each_change_once_across_an_outage(
    setup: Setup,
) -> None:
    """A component long-polling the MR through the SDK while the MR goes down and comes back
    (pushes acknowledged meanwhile, snapshots relayed later, perhaps twice) applies each
    change once: strictly increasing revisions, no empty change, ending at the newest policy.
    """
    mr, server = setup.mr, setup.server
    changes: list[PolicyChange] = []
    subscriber = PolicySubscriber(
        server.url,
        router_url=mr.url,
        subscriber_id="c1",
        subscriber_topic="c1-topic",
        policy_filters=[{"policy-id": "p*"}],
        timings=fast(backoff_max=0.1, poll_timeout=1.0),
    )

    async def consume() -> None:
        async for change in subscriber.changes():
            changes.append(change)

    def newest() -> str | None:
        policy = subscriber.policies.get("p1")
        return None if policy is None else str(policy["version"])

    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http, subscriber:
        consuming = asyncio.create_task(consume())
        try:
            await http.post("/pap/v1/policies", json={"policies": [_policy("p1", 1)]})
            await wait_for(lambda: newest() == "1.0.0", timeout=20)
            port = int(mr.url.rsplit(":", 1)[1])
            await stop_server(mr, setup.mr_task)
            for version in range(2, 6):
                r = await http.post("/pap/v1/policies", json={"policies": [_policy("p1", version)]})
                assert r.status_code == 200, r.text
            setup.mr, setup.mr_task = await start_server(
                mr.settings.model_copy(update={"port": port})
            )
            await wait_for(lambda: _drained(http, server), timeout=20)
            await wait_for(lambda: newest() == "5.0.0", timeout=20)
        finally:
            subscriber.stop()
            await asyncio.wait_for(consuming, timeout=10)
    revisions = [change.revision for change in changes]
    assert revisions == sorted(set(revisions)), revisions
    assert all(change.added or change.updated or change.removed for change in changes)
    assert changes[-1].policies["p1"]["version"] == "5.0.0"
