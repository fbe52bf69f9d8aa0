"""The callback style: ``run(handler)`` in a thread of its own (a program that is not
asyncio), and ``consume(handler)`` inside an event loop. A change is applied when the handler
returns; a handler that raises gets it again.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from policy_pubsub.client import PolicyChange
from tests.api.helpers import push, tosca
from tests.client.conftest import fast, ids, subscriber
from tests.conftest import LiveServer, wait_for

RUN_TIMEOUT = 15.0


def state_revision(path: Path) -> int | None:
    return json.loads(path.read_text())["revision"] if path.exists() else None


async def test_a_failing_handler_gets_the_same_change_until_it_succeeds(
    server: LiveServer, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """``run()`` calls a handler that fails twice a third time with the same change, and
    the state file does not advance until the handler returns.
    """
    state = tmp_path / "tca-1.json"
    calls: list[dict[str, Any]] = []
    sub = subscriber(server.url, state_file=state)

    def handler(change: PolicyChange) -> None:
        calls.append(
            {
                "revision": change.revision,
                "added": ids(change.added),
                "removed": sorted(change.removed),
                "state": state_revision(state),
            }
        )
        if len(calls) in (2, 3):
            raise RuntimeError("the component cannot apply it yet")
        if len(calls) == 4:
            sub.stop()

    await push(client, tosca("onap.a"))
    running = asyncio.create_task(asyncio.to_thread(sub.run, handler))
    try:
        await wait_for(lambda: (len(calls) == 1 and state.exists()) or running.done())
        first = calls[0]
        assert first["added"] == ["onap.a"] and first["state"] is None
        assert state_revision(state) == first["revision"]
        pushed = await push(client, tosca("onap.b"))
        await asyncio.wait_for(running, RUN_TIMEOUT)
    finally:
        sub.stop()
        await asyncio.wait_for(running, RUN_TIMEOUT)
    expected = {
        "revision": pushed["revision"],
        "added": ["onap.b"],
        "removed": [],
        "state": first["revision"],
    }
    assert calls[1:] == [expected, expected, expected]
    assert state_revision(state) == pushed["revision"]


async def test_run_in_a_thread_stops_from_another_thread(
    server: LiveServer, client: httpx.AsyncClient
) -> None:
    """``stop()`` from another thread ends a ``run()`` blocked on a long-poll, which then
    returns normally.
    """
    seen: list[list[str]] = []
    sub = subscriber(server.url, timings=fast(poll_timeout=30))
    running = asyncio.create_task(asyncio.to_thread(sub.run, lambda c: seen.append(ids(c.added))))
    try:
        await wait_for(lambda: server.state.router.held_reads == 1 or running.done())
        await push(client, tosca("onap.a"))
        await wait_for(lambda: seen == [["onap.a"]] or running.done())
        await wait_for(lambda: server.state.router.held_reads == 1 or running.done())
        await asyncio.to_thread(sub.stop)
        await asyncio.wait_for(running, 5)
    finally:
        sub.stop()
        await asyncio.wait_for(running, RUN_TIMEOUT)
    assert seen == [["onap.a"]]


async def test_consume_takes_an_async_handler(
    server: LiveServer, client: httpx.AsyncClient
) -> None:
    """Inside an event loop, ``consume()`` awaits an async handler and applies each change
    when it returns; one that raises is called again with the change.
    """
    attempts: list[int] = []
    async with subscriber(server.url) as sub:

        async def handler(change: PolicyChange) -> None:
            attempts.append(change.revision)
            await asyncio.sleep(0)
            if len(attempts) == 1:
                raise ValueError("first try fails")
            sub.stop()

        pushed = await push(client, tosca("onap.a"))
        await asyncio.wait_for(sub.consume(handler), RUN_TIMEOUT)
        assert attempts == [pushed["revision"], pushed["revision"]]
        assert ids(sub.policies) == ["onap.a"]
