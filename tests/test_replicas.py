"""Several server replicas on one PostgreSQL store behave as one server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from policy_pubsub.matching import Selector
from tests.conftest import postgres_database, wait_for
from tests.processes import ServerProcess

pytestmark = pytest.mark.slow


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[list[ServerProcess]]:
    """Three replicas (subprocesses) sharing a fresh PostgreSQL database."""
    async with postgres_database() as url, AsyncExitStack() as stack:
        started = []
        for name in "abc":
            process = ServerProcess(url, tmp_path / f"replica-{name}.log")
            started.append(await stack.enter_async_context(process))
        yield started


def _policy(
    policy_id: str, version: int, policy_type: str = "onap.policies.test"
) -> dict[str, Any]:
    return {
        "type": policy_type,
        "type_version": "1.0.0",
        "name": policy_id,
        "version": f"{version}.0.0",
        "metadata": {"policy-id": policy_id, "policy-version": f"{version}.0.0"},
        "properties": {"value": version},
    }


async def test_subscribe_on_one_push_on_another_poll_on_a_third(
    replicas: list[ServerProcess],
) -> None:
    """A subscription made on A, a push on B and a long-poll held on C: C answers with the
    snapshot as soon as B commits, and every replica answers reads with the new state.
    """
    a, b, c = replicas
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(
            f"{a.url}/decision/v1/subscription/tca-1",
            json={"subscriber_topic": "t1", "policy-filters": [{"policy-id": "p1"}]},
        )
        assert r.status_code == 201, r.text
        first = await http.get(f"{c.url}/events/t1/g/c", params={"timeout": 0})
        assert [json.loads(m)["event"] for m in first.json()] == ["subscribe"]

        loop = asyncio.get_running_loop()
        poll = asyncio.create_task(http.get(f"{c.url}/events/t1/g/c", params={"timeout": 20000}))
        await _until_held(http, c, "t1", "g", poll)
        pushed_at = loop.time()
        r = await http.post(f"{b.url}/pap/v1/policies", json={"policies": [_policy("p1", 1)]})
        assert r.json()["notified"] == 1
        answer = await asyncio.wait_for(poll, timeout=10)
        assert loop.time() - pushed_at < 5  # woken by B's commit, not by the 20 s timeout
        [snapshot] = [json.loads(m) for m in answer.json()]
        assert (snapshot["event"], list(snapshot["policies"])) == ("update", ["p1"])

        for replica in replicas:
            decision = await http.post(
                f"{replica.url}/decision/v1", json={"resource": {"policy-id": "p1"}}
            )
            assert list(decision.json()["policies"]) == ["p1"]
            shown = await http.get(f"{replica.url}/decision/v1/subscription/tca-1")
            assert shown.json()["status"]["last_revision"] == snapshot["revision"]


async def _until_held(
    http: httpx.AsyncClient,
    replica: ServerProcess,
    topic: str,
    group: str,
    poll: asyncio.Task[httpx.Response],
) -> None:
    """Wait until the group's position shows the first poll consumed, so the next is held."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while loop.time() < deadline:
        r = await http.get(f"{replica.url}/topics/{topic}")
        groups = {g["name"]: g for g in r.json()["consumer_groups"]}
        if group in groups and groups[group]["lag"] == 0 and not poll.done():
            return
        await asyncio.sleep(0.02)
    pytest.fail("the poll was never held")


async def test_concurrent_changes_on_all_replicas_end_in_the_right_snapshots(
    replicas: list[ServerProcess],
) -> None:
    """Pushes, deletes and subscribes spread over three replicas at once leave every
    subscriber's newest snapshot equal to what the acknowledged changes, in revision order,
    make of its filters; and each subscriber's revisions strictly increase on its topic.
    """
    rng = random.Random(20261122)
    ids = [f"p{i}" for i in range(6)]
    subscribers = {
        f"s{i}": [{"policy-id": rng.sample(ids, 2)}] if i % 2 else [{"policy-id": "p*"}]
        for i in range(6)
    }
    acknowledged: list[tuple[int, str, dict[str, Any] | None]] = []

    async def pusher(http: httpx.AsyncClient, worker: int) -> None:
        for step in range(12):
            replica = replicas[(worker + step) % len(replicas)]
            policy_id = rng.choice(ids)
            if rng.random() < 0.2:
                r = await http.delete(f"{replica.url}/pap/v1/policies/{policy_id}")
                if r.status_code == 200:
                    acknowledged.append((r.json()["revision"], policy_id, None))
                else:
                    assert r.status_code == 404, r.text
                continue
            body = _policy(policy_id, worker * 100 + step)
            r = await http.post(f"{replica.url}/pap/v1/policies", json={"policies": [body]})
            assert r.status_code == 200, r.text
            acknowledged.append((r.json()["revision"], policy_id, body))

    async def subscriber(http: httpx.AsyncClient, index: int, name: str) -> None:
        replica = replicas[index % len(replicas)]
        for _ in range(2):
            r = await http.post(
                f"{replica.url}/decision/v1/subscription/{name}",
                json={"subscriber_topic": f"topic-{name}", "policy-filters": subscribers[name]},
            )
            assert r.status_code in (200, 201), r.text

    async with httpx.AsyncClient(timeout=30) as http:
        await asyncio.gather(
            *(pusher(http, w) for w in range(4)),
            *(subscriber(http, i, name) for i, name in enumerate(subscribers)),
        )
        deployed: dict[str, dict[str, Any]] = {}
        for _, policy_id, body in sorted(acknowledged, key=lambda item: item[0]):
            if body is None:
                deployed.pop(policy_id, None)
            else:
                deployed[policy_id] = body

        for index, (name, filters) in enumerate(subscribers.items()):
            replica = replicas[(index + 1) % len(replicas)]
            r = await http.get(
                f"{replica.url}/events/topic-{name}/verify/c", params={"timeout": 0, "limit": 10000}
            )
            snapshots = [json.loads(m) for m in r.json()]
            revisions = [s["revision"] for s in snapshots]
            assert revisions == sorted(set(revisions)), f"{name}: {revisions}"
            selector = Selector.from_filters(filters)
            expected = {
                pid: body for pid, body in deployed.items() if selector.matches(pid, body["type"])
            }
            assert snapshots[-1]["policies"] == expected, name


ROUTERS = ["embedded", "dmaap", "nats"]
PUSHES = 300


@pytest.mark.parametrize("router", ROUTERS)
async def test_killing_a_replica_mid_burst_loses_no_acknowledged_push(
    router: str, tmp_path: Path
) -> None:
    """Two replicas take pushes; one is killed with SIGKILL in the middle of the burst. Every
    push either replica acknowledged reaches the subscribers, through the survivor and the
    router, and each subscriber's newest snapshot equals what the store holds.
    """
    rng = random.Random(f"kill-{router}")
    async with postgres_database() as url, AsyncExitStack() as stack:
        args: list[str] = []
        env: dict[str, str] = {}
        mr: ServerProcess | None = None
        if router == "dmaap":
            mr = ServerProcess(tmp_path / "mr.db", tmp_path / "mr.log")
            await stack.enter_async_context(mr)
            args = ["--router", f"dmaap+{mr.url}"]
        elif router == "nats":
            await _require_nats()
            stream = f"PP_TEST_{rng.randrange(10**9)}"
            env = {"POLICY_PUBSUB_NATS_STREAM": stream}
            args = ["--router", "nats://127.0.0.1:4222"]
            stack.push_async_callback(_delete_stream, stream)
        a = ServerProcess(url, tmp_path / "a.log", args=args, env=env)
        b = ServerProcess(url, tmp_path / "b.log", args=args, env=env)
        await stack.enter_async_context(a)
        await stack.enter_async_context(b)

        filters = {
            "s1": [{"policy-id": "a*"}],
            "s2": [{"policy-id": "b*"}],
            "s3": [{"policy-type": "onap.test"}],
        }
        async with httpx.AsyncClient(timeout=30) as http:
            for name, wanted in filters.items():
                r = await http.post(
                    f"{a.url}/decision/v1/subscription/{name}",
                    json={"subscriber_topic": f"topic-{name}", "policy-filters": wanted},
                )
                assert r.status_code == 201, r.text

            acknowledged: dict[str, list[int]] = {}  # policy id -> acknowledged versions
            in_flight: dict[str, int] = {}

            async def pusher(replica: ServerProcess, prefix: str) -> None:
                for step in range(1, PUSHES + 1):
                    policy_id = f"{prefix}{step % 4}"
                    in_flight[policy_id] = step
                    try:
                        r = await http.post(
                            f"{replica.url}/pap/v1/policies",
                            json={"policies": [_policy(policy_id, step)]},
                        )
                    except httpx.TransportError:
                        return  # this replica is gone
                    assert r.status_code == 200, r.text
                    acknowledged.setdefault(policy_id, []).append(step)

            def a_done() -> int:
                return sum(len(v) for k, v in acknowledged.items() if k.startswith("a"))

            async def killer() -> None:
                # Once A has acknowledged some of its burst, at a random moment of the rest.
                await wait_for(lambda: a_done() >= 2, timeout=30)
                await asyncio.sleep(rng.uniform(0, 0.1))
                await a.kill()

            await asyncio.gather(pusher(a, "a"), pusher(b, "b"), killer())
            assert a.returncode is not None
            assert a_done() < PUSHES, "the kill must land in the middle of A's burst"

            if router != "embedded":
                await _until_outbox_empty(http, b)
            source = mr if mr is not None else b
            for name, wanted in filters.items():
                decision = await http.post(f"{b.url}/decision/v1", json={"policy-filters": wanted})
                stored = decision.json()["policies"]
                snapshots = await _read_topic(http, source, f"topic-{name}")
                mine = [s for s in snapshots if s["subscriber_id"] == name]
                revisions = [s["revision"] for s in mine]
                # Never an older snapshot after a newer one. Delivery is at least once: a
                # relay killed between the router's acknowledgement and deleting its outbox
                # rows publishes them again from the survivor, and only NATS drops such copies
                # (by message id); the consumer's revision check drops them elsewhere.
                assert revisions == sorted(revisions), f"{name}: {revisions}"
                if router != "dmaap":
                    assert len(set(revisions)) == len(revisions), f"{name}: {revisions}"
                assert mine[-1]["policies"] == stored, name
            for policy_id, versions in acknowledged.items():
                shown = (await http.get(f"{b.url}/pap/v1/policies/{policy_id}")).json()
                final = shown["properties"]["value"]
                allowed = {versions[-1]}
                if policy_id.startswith("a"):  # the killed replica may have committed one more
                    allowed.add(in_flight[policy_id])
                assert final in allowed, (policy_id, final, versions)


async def _read_topic(
    http: httpx.AsyncClient, source: ServerProcess, topic: str
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while True:
        r = await http.get(
            f"{source.url}/events/{topic}/verify/c", params={"timeout": 0, "limit": 1000}
        )
        assert r.status_code == 200, r.text
        batch = [json.loads(m) for m in r.json()]
        if not batch:
            return found
        found.extend(batch)


async def _until_outbox_empty(http: httpx.AsyncClient, replica: ServerProcess) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while loop.time() < deadline:
        health = (await http.get(f"{replica.url}/healthcheck")).json()
        if health["details"]["outbox"]["depth"] == 0:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"the outbox never emptied: {health}")


async def _require_nats() -> None:
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", 4222)
    except OSError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"NATS is not reachable on 127.0.0.1:4222: {exc}")
    writer.close()
    await writer.wait_closed()


async def _delete_stream(stream: str) -> None:
    import nats

    connection = await nats.connect("nats://127.0.0.1:4222")
    try:
        with contextlib.suppress(Exception):
            await connection.jetstream().delete_stream(stream)
    finally:
        await connection.close()
