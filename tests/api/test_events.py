"""The long-poll endpoint: answered in front of the router with the request id and counted in
the limits; its watch for the client leaving, stepped without a task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.types import Message

from policy_pubsub import constants
from policy_pubsub.api.events import DisconnectWatch
from policy_pubsub.api.limits import Limits
from policy_pubsub.exceptions import StoreUnavailable
from policy_pubsub.routers.embedded import EmbeddedRouter
from policy_pubsub.store import GroupRow
from tests.api.helpers import UUID, assert_dmaap_error
from tests.conftest import LiveServer, make_settings, start_server, stop_server, wait_for


class Client:
    """A ``receive`` as uvicorn's: the request, then ``http.disconnect`` once the client
    leaves, waiting on an ``asyncio.Event`` in between.
    """

    def __init__(self) -> None:
        self.left = asyncio.Event()
        self.calls = 0

    async def receive(self) -> Message:
        self.calls += 1
        if self.calls == 1:
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(0)  # a bare yield, as anyio's checkpoints make
        await self.left.wait()
        return {"type": "http.disconnect"}


async def test_the_watch_completes_gone_when_the_client_leaves() -> None:
    """``gone`` completes once ``receive`` says the client left, and not before."""
    client = Client()
    gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    watch = DisconnectWatch(client.receive, gone)
    for _ in range(3):
        await asyncio.sleep(0)
    assert not gone.done() and client.calls == 2
    client.left.set()
    await asyncio.wait_for(gone, timeout=5)
    watch.close()


async def test_a_closed_watch_stops_receiving() -> None:
    """Closing the watch ends the ``receive()`` under way (nothing waits on the client any
    more) and leaves ``gone`` alone.
    """
    client = Client()
    gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    watch = DisconnectWatch(client.receive, gone)
    for _ in range(3):
        await asyncio.sleep(0)
    watch.close()
    client.left.set()
    for _ in range(3):
        await asyncio.sleep(0)
    assert not gone.done() and client.calls == 2


async def test_a_failing_receive_counts_as_the_client_gone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A ``receive`` that raises ends the watch with ``gone`` complete, logged, so the poll
    ends consuming nothing rather than hold for its whole timeout.
    """

    async def receive() -> Message:
        raise ConnectionError("reset")

    gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    with caplog.at_level(logging.ERROR, logger="policy_pubsub.api.events"):
        DisconnectWatch(receive, gone).close()
    assert gone.done()
    assert "receiving from the client failed" in caplog.text


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[LiveServer]:
    live, task = await start_server(make_settings(tmp_path, position_flush_seconds=0))
    try:
        yield live
    finally:
        await stop_server(live, task)


@pytest.fixture
async def client(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        yield http


async def test_a_poll_answer_carries_the_request_id(client: httpx.AsyncClient) -> None:
    """Long-poll answers echo ``X-ONAP-RequestID`` or carry a new one, errors included."""
    assert (await client.post("/events/t", json={"n": 1})).status_code == 200
    echoed = await client.get(
        "/events/t/g/c", params={"timeout": 0}, headers={constants.REQUEST_ID_HEADER: "poll-1"}
    )
    made = await client.get("/events/t/g/c", params={"timeout": 0})
    unknown = await client.get("/events/nosuch/g/c", params={"timeout": 0})
    assert (echoed.status_code, echoed.json()) == (200, ['{"n":1}'])
    assert echoed.headers[constants.REQUEST_ID_HEADER] == "poll-1"
    assert (made.status_code, made.json()) == (200, [])
    assert UUID.match(made.headers[constants.REQUEST_ID_HEADER])
    assert_dmaap_error(unknown, 404, "No such topic exists.-[nosuch]")
    assert UUID.match(unknown.headers[constants.REQUEST_ID_HEADER])


async def test_other_methods_on_the_poll_route_are_405(client: httpx.AsyncClient) -> None:
    """Only GET long-polls; another method on its path is a 405 in DMaaP's shape."""
    assert (await client.post("/events/t", json={"n": 1})).status_code == 200
    assert_dmaap_error(await client.delete("/events/t/g/c"), 405)


async def test_head_on_the_poll_route_consumes_nothing(client: httpx.AsyncClient) -> None:
    """A HEAD (a monitoring probe, say) is a 405 naming GET, and the group's messages are
    still there for the GET that follows.
    """
    assert (await client.post("/events/t", json={"n": 1})).status_code == 200
    probe = await client.head("/events/t/g/c", params={"timeout": 0})
    assert probe.status_code == 405
    assert probe.headers["allow"] == "GET"
    polled = await client.get("/events/t/g/c", params={"timeout": 0})
    assert (polled.status_code, polled.json()) == (200, ['{"n":1}'])


async def test_a_poll_whose_client_left_frees_its_place(
    server: LiveServer, client: httpx.AsyncClient
) -> None:
    """A held poll whose client hangs up stops being held and is counted out of the limits."""
    assert (await client.post("/events/t", json={"n": 1})).status_code == 200
    assert (await client.get("/events/t/g/c", params={"timeout": 0})).status_code == 200
    limits: Limits = server.state.limits
    router: EmbeddedRouter = server.state.router
    host, port = server.url.removeprefix("http://").split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /events/t/g/c?timeout=20000 HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    await wait_for(lambda: router.held_reads == 1 and limits.active_polls == 1)
    writer.close()
    await writer.wait_closed()
    await wait_for(lambda: router.held_reads == 0 and limits.active_polls == 0)


async def test_a_poll_whose_consumption_cannot_be_saved_is_still_answered(
    server: LiveServer,
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """When the store cannot save the group's new position after the answer was sent, the
    client keeps its answer and the failure is a warning, not a server error.
    """
    assert (await client.post("/events/t", json={"n": 1})).status_code == 200
    store = server.state.store

    async def save_positions(rows: list[GroupRow]) -> None:
        raise StoreUnavailable("store write failed: disk I/O error")

    monkeypatch.setattr(store.positions, "save", save_positions)
    with caplog.at_level(logging.WARNING):
        r = await client.get("/events/t/g/c", params={"timeout": 0})
    assert (r.status_code, r.json()) == (200, ['{"n":1}'])
    assert "could not mark t/g consumed" in caplog.text
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
