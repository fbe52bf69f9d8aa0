"""The server with the RabbitMQ router, end to end on the real broker: snapshots leave the
outbox for each subscriber's queue; pushes acknowledged while RabbitMQ cannot be reached wait
in the outbox and arrive once, once it can; a kill -9 of the server in the middle of a push
burst loses no acknowledged push; the SDK's HTTP long-poll reads the subscriber's queue.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest

from policy_pubsub.client import PolicySubscriber
from tests.api.helpers import tosca
from tests.client.conftest import fast
from tests.conftest import make_settings, start_server, stop_server, wait_for
from tests.processes import ServerProcess, free_port
from tests.rabbitmq import AMQP_URL, delete_on_broker, skip_without_rabbitmq, unique_exchange
from tests.test_schemas import assert_valid

FILTERS = [{"policy-id": "onap.*"}]


async def _outbox_depth(http: httpx.AsyncClient) -> int:
    details: dict[str, Any] = (await http.get("/healthcheck")).json()["details"]
    return int(details["outbox"]["depth"])


async def _queued(queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Every message in a queue, taken and acknowledged by a plain AMQP client."""
    connection = await aio_pika.connect(AMQP_URL)
    try:
        source = await (await connection.channel()).get_queue(queue, ensure=False)
        taken = []
        while (message := await source.get(no_ack=False, fail=False)) is not None:
            await message.ack()
            taken.append(message)
        return taken
    finally:
        await connection.close()


@pytest.mark.parametrize("wrong", ["port", "vhost"])
async def test_pushes_wait_in_the_outbox_until_rabbitmq_is_reachable(
    tmp_path: Path, wrong: str
) -> None:
    """With a wrong port or vhost, a subscribe and a push are acknowledged and wait in the
    outbox; restarted with the right URL, the server delivers the newest snapshot, once.
    """
    await skip_without_rabbitmq()
    exchange, subscriber = unique_exchange(), f"sub-{wrong}-{random.getrandbits(32):x}"
    bad = (
        f"amqp://guest:guest@127.0.0.1:{free_port()}/"
        if wrong == "port"
        else "amqp://guest:guest@127.0.0.1:5672/no-such-vhost"
    )
    settings = make_settings(
        tmp_path, router_url=bad, amqp_exchange=exchange, amqp_timeout_seconds=1
    )
    try:
        live, task = await start_server(settings)
        try:
            async with httpx.AsyncClient(base_url=live.url, timeout=10) as http:
                r = await http.post(
                    f"/decision/v1/subscription/{subscriber}",
                    json={"subscriber_topic": "t.outage", "policy-filters": FILTERS},
                )
                assert r.status_code == 201, r.text
                r = await http.post("/pap/v1/policies", json={"policies": [tosca("onap.a")]})
                assert r.status_code == 200, r.text
                assert await _outbox_depth(http) == 2
        finally:
            await stop_server(live, task)
        live, task = await start_server(settings.model_copy(update={"router_url": AMQP_URL}))
        try:
            async with httpx.AsyncClient(base_url=live.url, timeout=10) as http:
                await wait_for(lambda: _outbox_depth_is(http, 0), timeout=15)
        finally:
            await stop_server(live, task)
        messages = await _queued(subscriber)
        assert len(messages) == 1  # the subscribe snapshot was superseded in the same batch
        snapshot = json.loads(messages[0].body)
        assert list(snapshot["policies"]) == ["onap.a"]
    finally:
        await delete_on_broker(exchange, [subscriber])


async def _outbox_depth_is(http: httpx.AsyncClient, depth: int) -> bool:
    return await _outbox_depth(http) == depth


async def test_a_kill_9_in_a_push_burst_loses_no_acknowledged_push(tmp_path: Path) -> None:
    """kill -9 of the server while a PAP pushes new policies: after the restart the newest
    snapshot in the subscriber's queue holds every policy whose push was acknowledged.
    """
    await skip_without_rabbitmq()
    exchange, subscriber = unique_exchange(), f"sub-kill-{random.getrandbits(32):x}"
    acknowledged: list[str] = []
    attempted = 0
    pushing = True
    server = ServerProcess(
        tmp_path / "store.db",
        tmp_path / "server.log",
        args=["--router", AMQP_URL],
        env={"POLICY_PUBSUB_AMQP_EXCHANGE": exchange},
    )
    try:
        async with server, httpx.AsyncClient(base_url=server.url, timeout=5) as http:
            r = await http.post(
                f"/decision/v1/subscription/{subscriber}",
                json={"subscriber_topic": "t.kill", "policy-filters": FILTERS},
            )
            assert r.status_code == 201, r.text

            async def pusher() -> None:
                nonlocal attempted
                while pushing:
                    attempted += 1
                    name = f"onap.p{attempted}"
                    try:
                        answer = await http.post(
                            "/pap/v1/policies", json={"policies": [tosca(name)]}
                        )
                    except httpx.TransportError:
                        await asyncio.sleep(0.02)  # the server is down: not acknowledged
                        continue
                    if answer.status_code == 200:
                        acknowledged.append(name)

            pushes = asyncio.create_task(pusher())
            try:
                await wait_for(lambda: len(acknowledged) >= 10, timeout=15)
                await server.kill(signal.SIGKILL)
                await server.restart()
                before = len(acknowledged)
                await wait_for(lambda: len(acknowledged) >= before + 5, timeout=15)
            finally:
                pushing = False
                await pushes
            await wait_for(lambda: _outbox_depth_is(http, 0), timeout=20)
        messages = await _queued(subscriber)
        newest = max((json.loads(m.body) for m in messages), key=lambda s: s["revision"])
        assert set(acknowledged) <= set(newest["policies"]), server.explain("lost pushes")
        assert set(newest["policies"]) <= {f"onap.p{n}" for n in range(1, attempted + 1)}
    finally:
        await server.stop()
        await delete_on_broker(exchange, [subscriber])


async def test_the_sdk_long_polls_its_queue_through_the_server(tmp_path: Path) -> None:
    """A component on the SDK's HTTP long-poll (group: its subscriber id) gets each pushed
    change from its queue, through the server's MR read API.
    """
    await skip_without_rabbitmq()
    exchange, subscriber = unique_exchange(), f"sub-sdk-{random.getrandbits(32):x}"
    settings = make_settings(tmp_path, router_url=AMQP_URL, amqp_exchange=exchange)
    live, task = await start_server(settings)
    try:
        component = PolicySubscriber(
            live.url,
            subscriber_id=subscriber,
            subscriber_topic="t.sdk",
            policy_filters=FILTERS,
            timings=fast(),
        )
        async with (
            component,
            httpx.AsyncClient(base_url=live.url, timeout=10) as http,
        ):
            seen: list[list[str]] = []
            for version in (1, 2):
                r = await http.post(
                    "/pap/v1/policies",
                    json={"policies": [tosca("onap.sdk", version=f"{version}.0.0")]},
                )
                assert r.status_code == 200, r.text
                async for change in component.changes():
                    seen.append(sorted(change.added) + sorted(change.updated))
                    break
                await component.ack()
        assert seen == [["onap.sdk"], ["onap.sdk"]]
    finally:
        await stop_server(live, task)
        await delete_on_broker(exchange, [subscriber])


async def test_a_message_the_broker_refuses_for_good_goes_to_the_dead_letters(
    tmp_path: Path,
) -> None:
    """A subscriber whose queue RabbitMQ will not declare (an ``amq.`` name is reserved) has
    its snapshot moved to the dead letters with RabbitMQ's reason; the snapshot behind it, of
    another subscriber on the same topic, is delivered.
    """
    await skip_without_rabbitmq()
    exchange, tag = unique_exchange(), f"{random.getrandbits(32):x}"
    refused, fine = f"amq.refused-{tag}", f"sub-fine-{tag}"
    settings = make_settings(tmp_path, router_url=AMQP_URL, amqp_exchange=exchange)
    live, task = await start_server(settings)
    try:
        async with httpx.AsyncClient(base_url=live.url, timeout=10) as http:
            for subscriber in (refused, fine):
                r = await http.post(
                    f"/decision/v1/subscription/{subscriber}",
                    json={"subscriber_topic": "t.dead", "policy-filters": FILTERS},
                )
                assert r.status_code == 201, r.text
            await wait_for(lambda: _outbox_depth_is(http, 0), timeout=15)
            r = await http.get("/dead-letters")
            assert r.status_code == 200, r.text
            [letter] = r.json()["dead_letters"]
        assert letter["subscriber_id"] == refused
        assert "ACCESS_REFUSED" in letter["reason"]
        [message] = await _queued(fine)
        assert json.loads(message.body)["subscriber_id"] == fine
    finally:
        await stop_server(live, task)
        await delete_on_broker(exchange, [fine])


async def test_topics_and_healthcheck_show_a_queues_consumers_and_ready_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``/topics/{topic}`` gives a subscriber's queue its consumers (a plain AMQP consumer
    counts as one) and ready messages; ``/healthcheck`` the same over all queues; both valid
    against their schemas.
    """
    await skip_without_rabbitmq()
    monkeypatch.setattr("policy_pubsub.routers.amqp.SUMMARY_MAX_AGE_SECONDS", 0.0)
    exchange = unique_exchange()
    watched, idle = (f"sub-counts-{random.getrandbits(32):x}" for _ in range(2))
    settings = make_settings(tmp_path, router_url=AMQP_URL, amqp_exchange=exchange)
    live, task = await start_server(settings)
    connection = await aio_pika.connect(AMQP_URL)
    try:
        async with httpx.AsyncClient(base_url=live.url, timeout=10) as http:
            for subscriber in (watched, idle):
                r = await http.post(
                    f"/decision/v1/subscription/{subscriber}",
                    json={"subscriber_topic": f"t.{subscriber}", "policy-filters": FILTERS},
                )
                assert r.status_code == 201, r.text
            await wait_for(lambda: _is_empty(http), timeout=10)
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=1)
            await (await channel.get_queue(watched, ensure=False)).consume(_keep_unacked)
            r = await http.post("/pap/v1/policies", json={"policies": [tosca("onap.c")]})
            assert r.status_code == 200, r.text

            async def shown() -> bool:
                details = (await http.get(f"/topics/t.{watched}")).json()
                groups = [(g["name"], g["lag"], g["consumers"]) for g in details["consumer_groups"]]
                return groups == [(watched, 1, 1)]  # 1 unacknowledged, the push's ready

            await wait_for(shown, timeout=10)
            assert_valid("topic-details", (await http.get(f"/topics/t.{watched}")).json())
            answer = (await http.get("/healthcheck")).json()
            assert_valid("healthcheck", answer)
            queues = answer["details"]["queues"]
            assert {k: v for k, v in queues.items() if k != "read_at"} == {
                "queues": 2,
                "messages": 3,  # the subscribe and the push on idle, the push on watched
                "consumers": 1,
                "without_consumers": 1,
                "complete": True,
            }
    finally:
        await connection.close()
        await stop_server(live, task)
        await delete_on_broker(exchange, [watched, idle])


async def _keep_unacked(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    """A consumer that never acknowledges."""


async def _is_empty(http: httpx.AsyncClient) -> bool:
    return await _outbox_depth(http) == 0
