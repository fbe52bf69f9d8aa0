"""Polling a separate DMaaP Message Router (``router_url=``): the subscription and re-reads
go to the policy server, the long-polls to the router, as the consumer group and id given
(the subscriber id by default), and the router's answers may be arrays of objects.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from tests.api.helpers import push, tosca
from tests.client.conftest import SUBSCRIBER, TOPIC, fast, ids, next_change, subscriber
from tests.conftest import LiveServer

ROUTER = "http://dmaap.test:3904"


class FakeRouter:
    """A DMaaP Message Router stand-in: each poll waits for the next batch put in, up to
    the poll's timeout, and answers it; it records every request.
    """

    def __init__(self) -> None:
        self.batches: asyncio.Queue[list[Any]] = asyncio.Queue()
        self.requests: list[httpx.Request] = []

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        timeout = int(request.url.params["timeout"]) / 1000
        try:
            batch = await asyncio.wait_for(self.batches.get(), timeout)
        except TimeoutError:
            batch = []
        return httpx.Response(200, json=batch)


class ByHost(httpx.AsyncBaseTransport):
    """Requests to the fake router's host go to it; the rest to the real server."""

    def __init__(self, router: FakeRouter) -> None:
        self._router = httpx.MockTransport(router.handle)
        self._real = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "dmaap.test":
            return await self._router.handle_async_request(request)
        return await self._real.handle_async_request(request)

    async def aclose(self) -> None:
        await self._real.aclose()


async def snapshots_on_the_server(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    """tca-1's snapshots on the server's own topic, read by a group of the test's own."""
    answer = await client.get(f"/events/{TOPIC}/mirror/1", params={"timeout": 0})
    return [json.loads(text) for text in answer.json()]


@pytest.mark.parametrize(
    ("group", "consumer", "path"),
    [
        (None, None, f"/events/{TOPIC}/{SUBSCRIBER}/{SUBSCRIBER}"),
        ("dcae-tca", "tca-1-pod-0", f"/events/{TOPIC}/dcae-tca/tca-1-pod-0"),
    ],
)
async def test_polls_go_to_the_router_as_the_consumer_given(
    server: LiveServer,
    client: httpx.AsyncClient,
    group: str | None,
    consumer: str | None,
    path: str,
) -> None:
    """The subscriber long-polls ``router_url`` as its consumer group and id, and takes
    snapshots the router answers as objects or as strings.
    """
    router = FakeRouter()
    options: dict[str, Any] = {"consumer_group": group, "consumer_id": consumer}
    async with subscriber(
        server.url,
        router_url=ROUTER,
        transport=ByHost(router),
        timings=fast(poll_timeout=2),
        **options,
    ) as sub:
        changes = sub.changes()
        first = await push(client, tosca("onap.a"))
        second = await push(client, tosca("onap.b"))
        relayed = (await snapshots_on_the_server(client))[1:]  # after the subscribe snapshot
        assert [s["revision"] for s in relayed] == [first["revision"], second["revision"]]
        await router.batches.put([relayed[0]])  # an array of objects
        change = await next_change(changes)
        assert (change.revision, ids(change.added)) == (first["revision"], ["onap.a"])
        await router.batches.put([json.dumps(relayed[1])])  # an array of strings
        change = await next_change(changes)
        assert (change.revision, ids(change.added)) == (second["revision"], ["onap.b"])
    polls = [r for r in router.requests if r.method == "GET"]
    assert polls and all(r.url.path == path for r in polls)
    assert polls[0].url.params["timeout"] == "2000"
    assert polls[0].url.params["limit"] == "100"
    assert all(r.url.host == "dmaap.test" for r in router.requests)
