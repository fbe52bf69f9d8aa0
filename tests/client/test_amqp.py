"""The SDK consuming its own queue on RabbitMQ (``router_url="amqp://..."``), against a live
server on the RabbitMQ router and the machine's broker: each change once and in order, none
of it over HTTP; a message acknowledged only once its change is applied; a handler that raises
gets the change again; a queue that does not exist yet is waited for; a lost connection is
made again and what was not acknowledged comes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aio_pika.exceptions
import httpx
import pytest

from policy_pubsub.client import PolicyChange, PolicySubscriber
from policy_pubsub.testing import LiveServer
from tests.api.helpers import push, tosca
from tests.client.conftest import RecordingTransport, next_change, no_change, subscriber
from tests.conftest import make_settings, start_server, stop_server, wait_for
from tests.rabbitmq import AMQP_URL, delete_on_broker, skip_without_rabbitmq, unique_exchange


def unique_subscriber() -> str:
    """A subscriber id (so a queue name) no other test on the shared broker uses."""
    return f"sdk-amqp-{random.getrandbits(48):012x}"


def amqp_url_to(port: int) -> str:
    """``AMQP_URL`` with its host and port replaced by 127.0.0.1:``port``."""
    parts = urlsplit(AMQP_URL)
    userinfo = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}@127.0.0.1:{port}"))


class Gate:
    """A loopback TCP forwarder to RabbitMQ. Shut, it closes each connection it accepts at once
    (RabbitMQ unreachable); ``cut()`` aborts every connection it forwards (a lost connection).
    """

    def __init__(self, *, shut: bool = False) -> None:
        upstream = urlsplit(AMQP_URL)
        self._upstream = (upstream.hostname or "127.0.0.1", upstream.port or 5672)
        self.shut = shut
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.url = ""

    async def __aenter__(self) -> Gate:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.url = amqp_url_to(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def cut(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.shut:
            writer.transport.abort()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._upstream)
        self._writers.update((writer, upstream_writer))
        for source, target in ((reader, upstream_writer), (upstream_reader, writer)):
            task = asyncio.ensure_future(self._pipe(source, target))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await source.read(65536):
                target.write(data)
                await target.drain()
        target.transport.abort()


@contextlib.asynccontextmanager
async def amqp_server(
    tmp_path: Path, queues: list[str], *, router_url: str = AMQP_URL
) -> AsyncIterator[tuple[LiveServer, str, httpx.AsyncClient]]:
    """A server on the RabbitMQ router with an exchange of its own, and a client of it; the
    exchange and ``queues`` are deleted after.
    """
    await skip_without_rabbitmq()
    exchange = unique_exchange()
    settings = make_settings(tmp_path, router_url=router_url, amqp_exchange=exchange)
    live, task = await start_server(settings)
    try:
        async with httpx.AsyncClient(base_url=live.url, timeout=10) as http:
            yield live, exchange, http
    finally:
        await stop_server(live, task)
        await delete_on_broker(exchange, queues)


async def queue_state(queue: str) -> tuple[int, int]:
    """The ready messages and the consumers of ``queue`` (passive declare)."""
    connection = await aio_pika.connect(AMQP_URL, timeout=5)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        result = declared.declaration_result
        return int(result.message_count or 0), int(result.consumer_count or 0)
    finally:
        await connection.close()


def over_amqp(url: str, subscriber_id: str, exchange: str, **options: Any) -> PolicySubscriber:
    return subscriber(
        url,
        subscriber_id=subscriber_id,
        router_url=options.pop("router_url", AMQP_URL),
        amqp_exchange=exchange,
        **options,
    )


def versions(change: PolicyChange) -> dict[str, str]:
    return {pid: p["metadata"]["policy-version"] for pid, p in change.policies.items()}


async def test_each_change_arrives_once_and_in_order_and_none_over_http(tmp_path: Path) -> None:
    """Three versions of a policy, pushed one after the other, arrive as three changes in order
    and nothing more; the SDK never long-polls, and RabbitMQ holds no message afterwards.
    """
    sid = unique_subscriber()
    transport = RecordingTransport()
    async with (
        amqp_server(tmp_path, [sid]) as (live, exchange, http),
        over_amqp(live.url, sid, exchange, transport=transport) as sub,
    ):
        changes = sub.changes()
        seen = []
        for version in (1, 2, 3):
            await push(http, tosca("onap.a", version=f"{version}.0.0"))
            change = await next_change(changes)
            seen.append((change.revision, versions(change)["onap.a"]))
        await no_change(changes)
        assert [v for _, v in seen] == ["1.0.0", "2.0.0", "3.0.0"]
        assert [r for r, _ in seen] == sorted({r for r, _ in seen})
        assert sub.policies["onap.a"]["metadata"]["policy-version"] == "3.0.0"
        await wait_for(lambda: _settled(sid), timeout=5)
    assert not [path for _, path, _ in transport.log if path.startswith("/events/")]


async def _settled(queue: str) -> bool:
    """The queue exists, one consumer (the subscriber) reads it, and none of it is ready."""
    try:
        ready, consumers = await queue_state(queue)
    except aio_pika.exceptions.ChannelNotFoundEntity:
        return False
    return ready == 0 and consumers == 1


async def _state_is(queue: str, expected: tuple[int, int]) -> bool:
    return await queue_state(queue) == expected


async def test_a_message_is_acknowledged_only_once_its_change_is_applied(tmp_path: Path) -> None:
    """A change left unapplied puts its message back on the queue when the subscriber closes;
    a subscriber that already holds that snapshot acknowledges the message and skips it.
    """
    sid = unique_subscriber()
    async with amqp_server(tmp_path, [sid]) as (live, exchange, http):
        async with over_amqp(live.url, sid, exchange) as sub:
            changes = sub.changes()
            await push(http, tosca("onap.a", version="1.0.0"))
            change = await next_change(changes)
            assert versions(change) == {"onap.a": "1.0.0"}
            await changes.aclose()  # left without applying it
        # RabbitMQ requeues the unacknowledged message once it has seen the channel close.
        await wait_for(lambda: _state_is(sid, (1, 0)), timeout=5)
        # The next run starts from the subscribe answer, which holds version 1 already.
        async with over_amqp(live.url, sid, exchange) as again:
            assert versions_of(again) == {"onap.a": "1.0.0"}
            await no_change(again.changes(), within=0.5)
            await wait_for(lambda: _settled(sid), timeout=5)


def versions_of(sub: PolicySubscriber) -> dict[str, str]:
    return {pid: p["metadata"]["policy-version"] for pid, p in sub.policies.items()}


async def test_a_handler_that_raises_gets_the_change_again(tmp_path: Path) -> None:
    """``run``'s handler raises on its first call: it is called again with the same change,
    and once it returned the message is acknowledged.
    """
    sid = unique_subscriber()
    calls: list[tuple[int, dict[str, str]]] = []
    async with amqp_server(tmp_path, [sid]) as (live, exchange, http):
        sub = over_amqp(live.url, sid, exchange)

        def handler(change: PolicyChange) -> None:
            calls.append((change.revision, versions(change)))
            if len(calls) == 1:
                raise RuntimeError("not now")
            sub.stop()

        async with sub:
            await push(http, tosca("onap.a", version="1.0.0"))
            await asyncio.wait_for(sub.consume(handler), 10)
        assert len(calls) == 2 and calls[0] == calls[1]
        assert calls[0][1] == {"onap.a": "1.0.0"}
        await wait_for(lambda: _state_is(sid, (0, 0)), timeout=5)


async def test_a_queue_that_does_not_exist_yet_is_waited_for(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """While the server cannot reach RabbitMQ its relay cannot declare the subscriber's queue:
    the SDK says so and retries (it declares nothing), and consumes the queue once the server
    made it, getting the next change over AMQP.
    """
    sid = unique_subscriber()
    caplog.set_level(logging.WARNING, "policy_pubsub.client")
    async with (
        Gate(shut=True) as gate,
        amqp_server(tmp_path, [sid], router_url=gate.url) as (live, exchange, http),
        over_amqp(live.url, sid, exchange) as sub,
    ):
        reading = asyncio.ensure_future(next_change(sub.changes(), timeout=20))
        await wait_for(lambda: f"queue {sid!r}" in caplog.text, timeout=5)
        assert "neither queue" in caplog.text  # the server has not made its exchange either
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
            await queue_state(sid)
        gate.shut = False
        await wait_for(lambda: _settled(sid), timeout=15)
        await push(http, tosca("onap.a", version="1.0.0"))
        change = await reading
        assert versions(change) == {"onap.a": "1.0.0"}


async def test_a_lost_connection_is_made_again_and_unacknowledged_messages_come_again(
    tmp_path: Path,
) -> None:
    """The connection to RabbitMQ is cut while a change is being applied: the subscriber
    connects again, the message comes again and is acknowledged as already applied, and the
    next change arrives once.
    """
    sid = unique_subscriber()
    async with (
        Gate() as gate,
        amqp_server(tmp_path, [sid]) as (live, exchange, http),
        over_amqp(live.url, sid, exchange, router_url=gate.url) as sub,
    ):
        changes = sub.changes()
        await push(http, tosca("onap.a", version="1.0.0"))
        first = await next_change(changes)
        gate.cut()  # while it applies version 1
        await push(http, tosca("onap.a", version="2.0.0"))
        second = await next_change(changes)
        assert (versions(first), versions(second)) == ({"onap.a": "1.0.0"}, {"onap.a": "2.0.0"})
        await no_change(changes)
        await wait_for(lambda: _settled(sid), timeout=5)


async def test_a_queue_deleted_under_the_consumer_is_noticed_and_the_subscription_made_again(
    tmp_path: Path,
) -> None:
    """Unsubscribing from elsewhere deletes the queue: RabbitMQ cancels the consumer, the
    subscriber re-reads at once (no periodic resync here), subscribes again, and consumes the
    queue the server makes anew.
    """
    sid = unique_subscriber()
    async with (
        amqp_server(tmp_path, [sid]) as (live, exchange, http),
        over_amqp(live.url, sid, exchange) as sub,
    ):
        pending = asyncio.ensure_future(next_change(sub.changes()))
        await wait_for(lambda: _settled(sid), timeout=5)
        deleted = await http.delete(f"/decision/v1/subscription/{sid}")
        assert deleted.status_code == 204

        async def subscribed_again() -> bool:
            answer = await http.get(f"/decision/v1/subscription/{sid}")
            return answer.status_code == 200

        await wait_for(subscribed_again, timeout=5)
        await wait_for(lambda: _settled(sid), timeout=5)
        await push(http, tosca("onap.a", version="1.0.0"))
        change = await pending
        assert versions(change) == {"onap.a": "1.0.0"}


def test_amqp_options_are_checked() -> None:
    """A consumer group, or a CA file for a plain amqp:// URL, is refused with the reason."""
    common: dict[str, Any] = {
        "subscriber_id": "s",
        "subscriber_topic": "t",
        "policy_filters": [{"policy-id": "a"}],
    }
    url = "http://127.0.0.1:6969"
    with pytest.raises(ValueError, match="own queue"):
        PolicySubscriber(url, router_url=AMQP_URL, consumer_group="g", **common)
    with pytest.raises(ValueError, match="amqps://"):
        PolicySubscriber(url, router_url=AMQP_URL, amqp_ca_file="ca.pem", **common)
    with pytest.raises(ValueError, match="not a readable PEM file"):
        PolicySubscriber(
            url, router_url="amqps://u:p@rabbit:5671/", amqp_ca_file="/nonexistent.pem", **common
        )
    with pytest.raises(ValueError, match="amqp_exchange"):
        PolicySubscriber(url, router_url=AMQP_URL, amqp_exchange="", **common)
    sub = PolicySubscriber(url, router_url="amqp://u:p@rabbit:5672/v", **common)
    assert sub.router_url == "amqp://u:p@rabbit:5672/v"
