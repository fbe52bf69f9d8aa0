"""Long-polls over real HTTP connections: held, woken, timed out, abandoned."""

from __future__ import annotations

import asyncio

import httpx

from policy_pubsub.routers.embedded import EmbeddedRouter
from tests.conftest import LiveServer, wait_for


def _router(server: LiveServer) -> EmbeddedRouter:
    router: EmbeddedRouter = server.state.router
    return router


async def _publish(client: httpx.AsyncClient, topic: str, n: int) -> None:
    r = await client.post(f"/events/{topic}", json={"n": n})
    assert r.status_code == 200, r.text


async def _drain(client: httpx.AsyncClient, topic: str, group: str) -> list[str]:
    r = await client.get(f"/events/{topic}/{group}/c", params={"timeout": 0, "limit": 1000})
    assert r.status_code == 200
    messages: list[str] = r.json()
    return messages


async def test_held_poll_is_answered_when_a_message_commits(
    server: LiveServer, client: httpx.AsyncClient
) -> None:
    """A poll waiting on an empty topic answers with the message as soon as it is published,
    long before its timeout.
    """
    await _publish(client, "t", 0)
    await _drain(client, "t", "g")
    loop = asyncio.get_running_loop()
    poll = asyncio.create_task(client.get("/events/t/g/c", params={"timeout": 20000}))
    await wait_for(lambda: _router(server).held_reads == 1)
    published = loop.time()
    await _publish(client, "t", 1)
    r = await asyncio.wait_for(poll, timeout=5)
    assert r.json() == ['{"n":1}']
    assert loop.time() - published < 5  # far inside the 20 s hold


async def test_poll_times_out_with_an_empty_array(client: httpx.AsyncClient) -> None:
    """A poll on a topic with nothing new answers [] after its timeout."""
    await _publish(client, "t", 0)
    await _drain(client, "t", "g")
    r = await client.get("/events/t/g/c", params={"timeout": 200})
    assert (r.status_code, r.json()) == (200, [])


async def test_abandoned_poll_consumes_nothing(
    server: LiveServer, client: httpx.AsyncClient
) -> None:
    """A client that hangs up while its poll is held loses nothing: the group's next poll
    gets the message published after the hang-up.
    """
    await _publish(client, "t", 0)
    await _drain(client, "t", "g")
    host, port = server.url.removeprefix("http://").split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /events/t/g/c?timeout=20000 HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    await wait_for(lambda: _router(server).held_reads == 1)
    writer.close()
    await writer.wait_closed()
    await wait_for(lambda: _router(server).held_reads == 0)
    await _publish(client, "t", 1)
    assert await _drain(client, "t", "g") == ['{"n":1}']


async def test_many_held_polls_are_all_woken(server: LiveServer, client: httpx.AsyncClient) -> None:
    """Every group holding a poll on a topic gets the one message published to it."""
    await _publish(client, "t", 0)
    groups = [f"g{i}" for i in range(20)]
    for group in groups:
        await _drain(client, "t", group)
    limits = httpx.Limits(max_connections=len(groups))
    async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as many:
        polls = [
            asyncio.create_task(many.get(f"/events/t/{g}/c", params={"timeout": 20000}))
            for g in groups
        ]
        await wait_for(lambda: _router(server).held_reads == len(groups))
        await _publish(client, "t", 1)
        answers = await asyncio.wait_for(asyncio.gather(*polls), timeout=10)
    assert [a.json() for a in answers] == [['{"n":1}']] * len(groups)
