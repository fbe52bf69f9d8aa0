"""End to end on NATS JetStream with a small max_payload: a change whose snapshot the router
cannot carry is refused with a 413 before anything is written, and delivery to the other
subscribers goes on.

Each test runs a private nats-server (max_payload 16 KiB) on a free port and a server that
relays to it, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from policy_pubsub.client.http import error_text
from policy_pubsub.routers.nats import HEADER_ALLOWANCE
from policy_pubsub.testing import LiveServer, start_server, stop_server
from tests.api.helpers import tosca
from tests.conftest import make_settings, postgres_database, wait_for
from tests.nats_server import NATS_SERVER, PrivateNats, skip_unless_ci, unique_stream

MAX_PAYLOAD = 16 * 1024
LIMIT = MAX_PAYLOAD - HEADER_ALLOWANCE
BIG = {"threshold": 1, "padding": "x" * (MAX_PAYLOAD + 1000)}  # a 17 KB policy


@pytest.fixture(params=["sqlite", "postgresql"])
async def server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LiveServer]:
    """A server relaying to a private nats-server whose max_payload is ``MAX_PAYLOAD``."""
    if not os.access(NATS_SERVER, os.X_OK):
        skip_unless_ci(f"no nats-server binary at {NATS_SERVER}")
    broker = PrivateNats(tmp_path / "jetstream", max_payload=MAX_PAYLOAD)
    await broker.start()
    try:
        async with AsyncExitStack() as stack:
            overrides: dict[str, Any] = {"router_url": broker.url, "nats_stream": unique_stream()}
            if request.param == "postgresql":
                overrides["database_url"] = await stack.enter_async_context(postgres_database())
            live, task = await start_server(make_settings(tmp_path, **overrides))
            try:
                yield live
            finally:
                await stop_server(live, task)
    finally:
        await broker.stop()


@pytest.fixture
async def http(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        yield client


async def _subscribe(http: httpx.AsyncClient, subscriber_id: str, policy_id: str) -> httpx.Response:
    return await http.post(
        f"/decision/v1/subscription/{subscriber_id}",
        json={
            "subscriber_topic": f"t_{subscriber_id}",
            "policy-filters": [{"policy-id": policy_id}],
        },
    )


async def _deploy(http: httpx.AsyncClient, *policies: dict[str, Any]) -> httpx.Response:
    return await http.post("/pap/v1/policies", json={"policies": list(policies)})


async def _outbox_empty(server: LiveServer) -> bool:
    return (await server.state.store.outbox.stats())[0] == 0


async def _snapshot_with(http: httpx.AsyncClient, topic: str, policy_id: str) -> dict[str, Any]:
    """The first snapshot on the topic that carries the policy, read within 10 s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while loop.time() < deadline:
        r = await http.get(f"/events/{topic}/check/c", params={"timeout": 1000})
        assert r.status_code == 200, r.text
        for text in r.json():
            snapshot: dict[str, Any] = json.loads(text)
            if policy_id in snapshot["policies"]:
                return snapshot
    pytest.fail(f"no snapshot with {policy_id} on {topic} within 10 s")


def _names_the_refusal(message: str, subscriber_id: str) -> None:
    assert f"subscriber {subscriber_id} would be" in message, message
    assert f"largest message of {LIMIT} bytes" in message, message


async def test_a_big_policy_is_refused_and_the_others_are_still_delivered(
    server: LiveServer, http: httpx.AsyncClient
) -> None:
    """A subscribes to ``big``, B to ``small``. Deploying a ``big`` over NATS's max_payload is
    a 413 naming A, the snapshot size and the limit; nothing is written (no policy, no
    revision, no outbox row), and B gets its ``small`` snapshot within seconds.
    """
    assert (await _subscribe(http, "a", "big")).status_code == 201
    assert (await _subscribe(http, "b", "small")).status_code == 201
    revision = server.state.service.revision

    refused = await _deploy(http, tosca("big", properties=BIG))
    assert refused.status_code == 413, refused.text
    body = refused.json()
    assert body["code"] == "PAYLOAD_TOO_LARGE"
    _names_the_refusal(body["error"], "a")
    assert (await http.get("/pap/v1/policies")).json() == {"policies": []}
    assert server.state.service.revision == revision
    assert await server.state.store.state.revision() == revision
    await wait_for(lambda: _outbox_empty(server), timeout=10)

    deployed = await _deploy(http, tosca("small"))
    assert deployed.status_code == 200 and deployed.json()["notified"] == 1
    snapshot = await _snapshot_with(http, "t_b", "small")
    assert snapshot["revision"] == deployed.json()["revision"] == revision + 1
    await wait_for(lambda: _outbox_empty(server), timeout=10)


async def test_one_oversize_change_in_a_group_commit_fails_alone(
    server: LiveServer, http: httpx.AsyncClient
) -> None:
    """Two pushes queued into one transaction: the oversize one is a 413, the other commits
    (200, the next revision) and its subscriber gets it.
    """
    assert (await _subscribe(http, "a", "big")).status_code == 201
    assert (await _subscribe(http, "b", "small")).status_code == 201
    service = server.state.service
    revision = service.revision

    async with service.writes_held():
        big = asyncio.ensure_future(_deploy(http, tosca("big", properties=BIG)))
        await wait_for(lambda: service.queued_changes == 1)
        small = asyncio.ensure_future(_deploy(http, tosca("small")))
        await wait_for(lambda: service.queued_changes == 2)
    refused, deployed = await asyncio.gather(big, small)

    assert refused.status_code == 413, refused.text
    _names_the_refusal(refused.json()["error"], "a")
    assert deployed.status_code == 200, deployed.text
    assert deployed.json()["revision"] == revision + 1
    assert [p["policy-id"] for p in (await http.get("/pap/v1/policies")).json()["policies"]] == [
        "small"
    ]
    await _snapshot_with(http, "t_b", "small")


async def test_a_pdp_update_that_cannot_be_delivered_gets_a_failed_pdp_status(
    server: LiveServer, http: httpx.AsyncClient
) -> None:
    """A PDP_UPDATE deploying the big policy is answered 413 with a PDP_STATUS whose
    ``responseStatus`` is FAIL with the same reason; nothing is deployed.
    """
    assert (await _subscribe(http, "a", "big")).status_code == 201
    revision = server.state.service.revision
    r = await http.post(
        "/pap/v1/pdp-update",
        json={
            "messageName": "PDP_UPDATE",
            "requestId": "update-1",
            "name": "pp-1",
            "policiesToBeDeployed": [tosca("big", properties=BIG)],
        },
    )
    assert r.status_code == 413, r.text
    status = r.json()
    assert status["messageName"] == "PDP_STATUS"
    assert status["response"]["responseTo"] == "update-1"
    assert status["response"]["responseStatus"] == "FAIL"
    _names_the_refusal(status["response"]["responseMessage"], "a")
    assert status["policies"] == [] and status["notified"] == 0
    assert error_text(r) == status["response"]["responseMessage"]  # what the CLI prints
    assert status["revision"] == revision == server.state.service.revision


async def test_a_subscribe_whose_first_snapshot_is_too_large_is_a_413(
    server: LiveServer, http: httpx.AsyncClient
) -> None:
    """With the big policy deployed (nobody subscribed to it), subscribing to it is a 413
    naming the subscriber; the subscription is not stored.
    """
    assert (await _deploy(http, tosca("big", properties=BIG))).status_code == 200
    revision = server.state.service.revision
    r = await _subscribe(http, "a", "big")
    assert r.status_code == 413, r.text
    _names_the_refusal(r.json()["error"], "a")
    assert (await http.get("/decision/v1/subscription/a")).status_code == 404
    assert server.state.service.revision == revision
    assert (await _subscribe(http, "b", "small")).status_code == 201
