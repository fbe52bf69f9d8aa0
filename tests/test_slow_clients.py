"""Slow clients cannot hold the server: a connection that sends no request, its headers a
byte at a time or its body too slowly gets 408 and is closed at its deadline; past the cap on
connections sending a request, the one that waited longest is closed; held long-polls and
keep-alive connections are not affected. Both HTTP parsers (httptools and h11) are checked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from policy_pubsub.testing import LiveServer, start_server, stop_server
from tests.conftest import make_settings, wait_for
from tests.processes import ServerProcess

HEADER_SECONDS = 0.5
BODY_SECONDS = 0.5
MAX_INCOMPLETE = 3
# How long a test waits for the server to act on a deadline: several times the deadline.
GRACE = 10.0


@pytest.fixture(params=[HttpToolsProtocol, H11Protocol], ids=["httptools", "h11"])
async def live(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LiveServer]:
    settings = make_settings(
        tmp_path,
        header_timeout_seconds=HEADER_SECONDS,
        body_timeout_seconds=BODY_SECONDS,
        max_incomplete_requests=MAX_INCOMPLETE,
    )
    server, task = await start_server(settings, http=request.param)
    try:
        yield server
    finally:
        await stop_server(server, task)


async def _connect(
    live: LiveServer,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", live.server.port)


async def _answer(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (fails after GRACE)."""
    return await asyncio.wait_for(reader.read(), GRACE)


async def test_a_silent_connection_gets_408_and_is_closed(live: LiveServer) -> None:
    reader, writer = await _connect(live)
    started = asyncio.get_running_loop().time()
    answer = await _answer(reader)
    waited = asyncio.get_running_loop().time() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert waited >= HEADER_SECONDS * 0.9
    writer.close()


async def test_headers_sent_a_byte_at_a_time_are_cut_off(live: LiveServer) -> None:
    """Bytes keep arriving, but the headers are not complete by the deadline: 408."""
    reader, writer = await _connect(live)
    request = b"GET /healthcheck HTTP/1.1\r\nhost: x\r\n" + b"x-padding: " + b"a" * 10_000
    closed = asyncio.create_task(_answer(reader))
    for byte in request:
        if closed.done():
            break
        writer.write(bytes([byte]))
        await asyncio.sleep(0.05)
    answer = await closed
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    writer.close()


async def test_a_body_trickled_in_is_cut_off(live: LiveServer) -> None:
    reader, writer = await _connect(live)
    writer.write(
        b"POST /pap/v1/policies HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 100000\r\n\r\n{"
    )
    closed = asyncio.create_task(_answer(reader))
    for _ in range(1000):
        if closed.done():
            break
        writer.write(b" ")
        await asyncio.sleep(0.05)
    answer = await closed
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    writer.close()
    async with httpx.AsyncClient(base_url=live.url) as client:
        listed = await client.get("/pap/v1/policies")
    assert listed.status_code == 200 and listed.json()["policies"] == []


async def test_past_the_cap_the_connection_that_waited_longest_is_closed(
    live: LiveServer,
) -> None:
    """MAX_INCOMPLETE silent connections, then one more: the first one is closed at once
    (long before its deadline), the others stay, and a quick client is still served.
    """
    first_reader, first_writer = await _connect(live)
    others = [await _connect(live) for _ in range(MAX_INCOMPLETE - 1)]
    await asyncio.sleep(0)  # let the server accept them in order
    await wait_for(lambda: len(live.server.server_state.connections) >= MAX_INCOMPLETE)
    newest = await _connect(live)
    answer = await asyncio.wait_for(first_reader.read(), HEADER_SECONDS * 0.8)
    assert answer == b""  # closed without an answer, before its deadline
    assert not newest[0].at_eof()
    async with httpx.AsyncClient(base_url=live.url) as client:
        assert (await client.get("/healthcheck")).status_code == 200
    for _, writer in [*others, newest]:
        writer.close()
    first_writer.close()


async def test_held_long_polls_and_keep_alive_requests_are_not_cut_off(live: LiveServer) -> None:
    """A long-poll held three times the header deadline is answered normally, and the same
    keep-alive connection then serves another request.
    """
    hold_ms = int(HEADER_SECONDS * 3 * 1000)
    async with httpx.AsyncClient(base_url=live.url, timeout=GRACE) as client:
        assert (await client.post("/events/t", json={"n": 1})).status_code == 200
        assert (await client.get("/events/t/g/c", params={"timeout": 0})).json() == ['{"n":1}']
        started = asyncio.get_running_loop().time()
        polled = await client.get(f"/events/t/g/c?timeout={hold_ms}")
        held = asyncio.get_running_loop().time() - started
        assert polled.status_code == 200 and polled.json() == []
        assert held >= HEADER_SECONDS * 2
        again = await client.get("/healthcheck")
        assert again.status_code == 200


async def test_serve_on_its_default_loop_cuts_off_a_silent_connection(tmp_path: Path) -> None:
    """``policy-pubsub serve`` as users run it (uvloop where installed, whose transports are
    not asyncio's classes) answers requests and gives a silent connection its 408.
    """
    async with ServerProcess(
        tmp_path / "store.db",
        tmp_path / "server.log",
        env={"POLICY_PUBSUB_HEADER_TIMEOUT_SECONDS": str(HEADER_SECONDS)},
    ) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        answer = await _answer(reader)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await client.get("/healthcheck")).status_code == 200
        assert "Traceback" not in server.log.read_text()
