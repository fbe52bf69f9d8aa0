"""What the subscriber does when things go wrong: the server killed and restarted under a
held poll, a poll reply lost on the wire after the server sent it, a snapshot consumed by
someone else, a subscription deleted behind its back.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest

from tests.api.helpers import push, tosca
from tests.client.conftest import (
    SUBSCRIBER,
    TOPIC,
    RecordingTransport,
    fast,
    group_lag,
    ids,
    next_change,
    no_change,
    subscriber,
)
from tests.client.proxy import CuttingProxy
from tests.conftest import LiveServer, wait_for
from tests.processes import ServerProcess


@pytest.mark.slow
async def test_a_server_killed_and_restarted_under_a_poll(tmp_path: Path) -> None:
    """After a kill -9 of the server while a poll is held, and its restart, the subscriber
    retries, re-reads its policies before polling on, and the next change still arrives.
    """
    recorder = RecordingTransport()
    async with (
        ServerProcess(tmp_path / "store.db", tmp_path / "server.log") as server,
        httpx.AsyncClient(base_url=server.url, timeout=10, trust_env=False) as http,
    ):
        try:
            await push(http, tosca("onap.a"))
            async with subscriber(server.url, transport=recorder) as sub:
                changes = sub.changes()
                pending = asyncio.create_task(next_change(changes, timeout=30))
                await wait_for(lambda: recorder.polls_in_flight == 1)
                await asyncio.sleep(0)  # let the poll reach the server before the kill
                killed_at = len(recorder.log)
                await server.kill(signal.SIGKILL)
                await wait_for(lambda: len(recorder.log) > killed_at + 1)  # failures, retries
                await server.restart()
                added = await push(http, tosca("onap.b"))
                change = await pending
        except BaseException:
            print(server.explain("server log"))
            raise
    assert (change.revision, ids(change.added), change.removed) == (
        added["revision"],
        ["onap.b"],
        frozenset(),
    )
    after = recorder.since(killed_at)
    events = f"/events/{TOPIC}/{SUBSCRIBER}/{SUBSCRIBER}"
    assert after[0][:2] == ("GET", events) and after[0][2] != "200", after  # the held poll
    reread = after.index(("GET", f"/decision/v1/subscription/{SUBSCRIBER}", "200"))
    assert ("GET", events, "200") not in after[:reread], after  # re-read before polling on


async def test_a_reply_lost_on_the_wire_is_healed_by_the_reread(
    server: LiveServer, client: httpx.AsyncClient
) -> None:
    """A poll reply that the server wrote (so the router moved the group past it) but the
    network lost is healed by the re-read after the failed poll, with no periodic resync.
    """
    await push(client, tosca("onap.a"))
    async with CuttingProxy(server.server.port) as proxy, subscriber(proxy.url) as sub:
        changes = sub.changes()
        pending = asyncio.create_task(next_change(changes))
        await wait_for(lambda: server.state.router.held_reads == 1)
        proxy.arm()
        added = await push(client, tosca("onap.b"))
        await asyncio.wait_for(proxy.cut.wait(), 5)
        change = await pending
        assert await group_lag(client, TOPIC, SUBSCRIBER) == 0  # no poll can bring it back
    assert (change.revision, ids(change.added), change.event) == (
        added["revision"],
        ["onap.b"],
        "resync",
    )
    assert ids(change.policies) == ["onap.a", "onap.b"]


async def test_the_periodic_resync_heals_a_snapshot_read_by_someone_else(
    server: LiveServer, client: httpx.AsyncClient
) -> None:
    """A snapshot that another reader of the same consumer group took never reaches the
    subscriber's polls; the periodic resync brings its policies anyway.
    """
    async with subscriber(server.url, timings=fast(resync_interval=0.3)) as sub:
        added = await push(client, tosca("onap.a"))
        stolen = await client.get(f"/events/{TOPIC}/{SUBSCRIBER}/thief", params={"timeout": 0})
        assert len(stolen.json()) == 2  # the subscribe snapshot and onap.a's
        change = await next_change(sub.changes(), timeout=5)
    assert (change.revision, ids(change.added), change.event) == (
        added["revision"],
        ["onap.a"],
        "resync",
    )


async def test_without_a_periodic_resync_a_stolen_snapshot_stays_lost(
    server: LiveServer, client: httpx.AsyncClient
) -> None:
    """The control of the test above: with ``resync_interval=0`` nothing brings it back."""
    async with subscriber(server.url, timings=fast(resync_interval=0)) as sub:
        await push(client, tosca("onap.a"))
        await client.get(f"/events/{TOPIC}/{SUBSCRIBER}/thief", params={"timeout": 0})
        await no_change(sub.changes(), within=0.6)


async def test_a_subscription_deleted_on_the_server_is_made_again(
    server: LiveServer, client: httpx.AsyncClient
) -> None:
    """When the re-read finds the subscription gone, the subscriber subscribes again and goes
    on receiving its changes.
    """
    async with subscriber(server.url, timings=fast(resync_interval=0.2)) as sub:
        changes = sub.changes()
        deleted = await client.delete(f"/decision/v1/subscription/{SUBSCRIBER}")
        assert deleted.status_code == 204
        pending = asyncio.create_task(next_change(changes))

        async def subscribed_again() -> bool:
            answer = await client.get(f"/decision/v1/subscription/{SUBSCRIBER}")
            return answer.status_code == 200

        await wait_for(subscribed_again)
        added = await push(client, tosca("onap.a"))
        change = await pending
    assert (change.revision, ids(change.added)) == (added["revision"], ["onap.a"])
