"""PolicySubscriber against a live server: subscribing, the changes it reports, what it
ignores on the topic, when a change counts as applied, and the errors it raises.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from policy_pubsub.client import PolicySubscriber, Timings
from policy_pubsub.exceptions import (
    ClientError,
    PolicyPubSubError,
    ServerUnreachable,
    SubscriptionRejected,
)
from tests.api.helpers import push, tosca, undeploy
from tests.client.conftest import (
    SUBSCRIBER,
    TOPIC,
    fast,
    ids,
    next_change,
    no_change,
    raw_publish,
    subscriber,
)
from tests.conftest import LiveServer, wait_for
from tests.processes import free_port


async def test_starting_policies_come_from_the_subscribe_answer(
    server: LiveServer, client: httpx.AsyncClient
) -> None:
    """Entering subscribes with every field, ``policies`` is the subscribe answer's snapshot,
    and the ``subscribe`` snapshot that follows on the topic is not reported as a change.
    """
    await push(client, tosca("onap.a"), tosca("other.x"))
    async with subscriber(server.url) as sub:
        record = (await client.get(f"/decision/v1/subscription/{SUBSCRIBER}")).json()
        assert record["subscriber_topic"] == TOPIC
        assert record["policy-filters"] == [{"policy-id": "onap.*"}]
        assert (record["ONAPName"], record["ONAPComponent"], record["ONAPInstance"]) == (
            "DCAE",
            "tca",
            "tca-1",
        )
        assert ids(sub.policies) == ["onap.a"]
        assert sub.revision == record["revision"]
        added = await push(client, tosca("onap.b"))
        change = await next_change(sub.changes())
    assert change.revision == added["revision"]
    assert ids(change.added) == ["onap.b"]
    assert (change.updated, change.removed) == ({}, frozenset())


async def test_added_updated_removed_across_pushes_and_deletes(
    server: LiveServer, client: httpx.AsyncClient
) -> None:
    """Each push or delete that touches the subscription is one change, with its revision,
    the policies added, updated and removed, and the whole new snapshot.
    """
    async with subscriber(server.url) as sub:
        changes = sub.changes()
        first = await push(client, tosca("onap.a"))
        change = await next_change(changes)
        assert (change.revision, ids(change.added), change.event) == (
            first["revision"],
            ["onap.a"],
            "update",
        )

        second = await push(client, tosca("onap.a", "2.0.0"), tosca("onap.b"))
        change = await next_change(changes)
        assert change.revision == second["revision"]
        assert ids(change.added) == ["onap.b"]
        assert ids(change.updated) == ["onap.a"]
        assert change.updated["onap.a"]["version"] == "2.0.0"
        assert change.previous["onap.a"]["version"] == "1.0.0"
        assert change.removed == frozenset()
        assert ids(change.policies) == ["onap.a", "onap.b"]

        await push(client, tosca("other.x"))  # matches no filter of ours: no snapshot for us
        third = await undeploy(client, "onap.a")
        change = await next_change(changes)
        assert change.revision == third["revision"]
        assert (change.added, change.updated, change.removed) == ({}, {}, {"onap.a"})
        assert ids(change.policies) == ["onap.b"]

        fourth = await push(client, tosca("onap.c"))
        change = await next_change(changes)
        assert (change.revision, ids(change.added)) == (fourth["revision"], ["onap.c"])
        assert ids(sub.policies) == ["onap.b"]  # not applied until the loop asks again
        assert sub.revision == third["revision"]


async def test_stale_duplicate_and_foreign_snapshots_are_ignored(
    server: LiveServer, client: httpx.AsyncClient
) -> None:
    """Snapshots published raw on the topic for another subscriber, with a revision not above
    the one held, or that are not snapshots at all, change nothing; the next real one does.
    """
    await push(client, tosca("onap.a"))
    async with subscriber(server.url) as sub:
        held = sub.revision
        changes = sub.changes()
        await raw_publish(
            client,
            TOPIC,
            {"subscriber_id": "dcae-other", "revision": held + 100, "policies": {}},
            {"subscriber_id": SUBSCRIBER, "revision": held, "policies": {}},  # duplicate
            {"subscriber_id": SUBSCRIBER, "revision": held - 1, "policies": {}},  # stale
            {"subscriber_id": SUBSCRIBER, "revision": str(held + 50), "policies": {}},
            {"subscriber_id": SUBSCRIBER, "revision": held + 50, "policies": ["x"]},
            {"hello": "world"},
        )
        await no_change(changes)

        pushed = await push(client, tosca("onap.b"))
        changes = sub.changes()
        change = await next_change(changes)
        assert (change.revision, ids(change.added), change.removed) == (
            pushed["revision"],
            ["onap.b"],
            frozenset(),
        )
        # The same revision again, and an older one, both claiming that nothing is left.
        await raw_publish(
            client,
            TOPIC,
            {"subscriber_id": SUBSCRIBER, "revision": pushed["revision"], "policies": {}},
            {"subscriber_id": SUBSCRIBER, "revision": held, "policies": {}},
        )
        last = await push(client, tosca("onap.c"))
        change = await next_change(changes)
        assert (change.revision, ids(change.added), change.removed) == (
            last["revision"],
            ["onap.c"],
            frozenset(),
        )
        assert ids(change.policies) == ["onap.a", "onap.b", "onap.c"]


async def test_a_change_left_by_break_comes_again(
    server: LiveServer, client: httpx.AsyncClient
) -> None:
    """Leaving the loop leaves the change unapplied, so the next ``changes()`` delivers it
    again; ``ack()`` applies it.
    """
    async with subscriber(server.url) as sub:
        pushed = await push(client, tosca("onap.a"))
        async for change in sub.changes():
            assert ids(change.added) == ["onap.a"]
            break
        assert sub.policies == {}
        again = await next_change(sub.changes())
        assert (again.revision, ids(again.added)) == (pushed["revision"], ["onap.a"])
        assert sub.policies == {}
        await sub.ack()
        assert ids(sub.policies) == ["onap.a"]
        assert sub.revision == pushed["revision"]
        await no_change(sub.changes())


async def test_stop_ends_the_iteration_while_a_poll_is_held(server: LiveServer) -> None:
    """``stop()`` ends ``changes()`` at once, even while a long-poll is waiting."""
    async with subscriber(server.url, timings=fast(poll_timeout=30)) as sub:
        received = []

        async def iterate() -> None:
            async for change in sub.changes():
                received.append(change)

        task = asyncio.create_task(iterate())
        await wait_for(lambda: server.state.router.held_reads == 1)
        sub.stop()
        await asyncio.wait_for(task, 2)
    assert received == []


async def test_the_subscription_survives_close_unless_asked(
    server: LiveServer, client: httpx.AsyncClient
) -> None:
    """Closing keeps the subscription (a restart must not drop it); with
    ``unsubscribe_on_close=True`` (an uninstall) it is deleted.
    """
    path = f"/decision/v1/subscription/{SUBSCRIBER}"
    async with subscriber(server.url):
        pass
    assert (await client.get(path)).status_code == 200
    async with subscriber(server.url, unsubscribe_on_close=True):
        pass
    assert (await client.get(path)).status_code == 404


async def test_a_subscriber_whose_subscription_and_topic_went_subscribes_again(
    server: LiveServer, client: httpx.AsyncClient
) -> None:
    """A subscriber whose subscription the server deleted (as stale expiry does), and whose
    topic's row maintenance then dropped, is answered 404 for the topic at its next poll: it
    re-reads, finds no subscription, subscribes again (the topic is made again), and gets
    the changes after.
    """
    async with subscriber(server.url, timings=fast(poll_timeout=0.2)) as sub:
        router = server.state.router
        changes = sub.changes()
        first = asyncio.create_task(next_change(changes))
        await wait_for(lambda: router.held_reads == 1)
        path = f"/decision/v1/subscription/{SUBSCRIBER}"
        assert (await client.delete(path)).status_code == 204
        await router.maintain()
        assert TOPIC not in await router.topics()
        await push(client, tosca("onap.a"))
        change = await first
        assert ids(change.added) == ["onap.a"]
        assert (await client.get(path)).status_code == 200
        assert TOPIC in await router.topics()
        added = await push(client, tosca("onap.b"))
        change = await next_change(changes)
        assert (change.revision, ids(change.added)) == (added["revision"], ["onap.b"])


async def test_a_rejected_subscription_raises_with_the_server_text(server: LiveServer) -> None:
    """A subscription the server refuses raises SubscriptionRejected carrying the status and
    the server's own sentence, at once and without retrying.
    """
    bad = subscriber(server.url, policy_filters=[{"policy-name": "x"}], timings=fast())
    with pytest.raises(SubscriptionRejected) as caught:
        async with bad:
            pytest.fail("entered a rejected subscription")
    error = caught.value
    assert isinstance(error, ClientError) and isinstance(error, PolicyPubSubError)
    assert error.status == 400
    assert "policy-name" in error.error
    assert error.url == f"{server.url}/decision/v1/subscription/{SUBSCRIBER}"


async def test_an_unreachable_server_raises_after_the_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With ``give_up_after``, a server that never answers raises ServerUnreachable once
    requests have failed for that long; each retry is logged as a warning.
    """
    url = f"http://127.0.0.1:{free_port()}"
    loop = asyncio.get_running_loop()
    started = loop.time()
    with (
        caplog.at_level(logging.WARNING, logger="policy_pubsub.client"),
        pytest.raises(ServerUnreachable) as caught,
    ):
        async with subscriber(url, timings=fast(give_up_after=0.3)):
            pytest.fail("entered without a server")
    assert 0.3 <= loop.time() - started < 5
    assert caught.value.attempts >= 2
    assert "ConnectError" in caught.value.reason
    assert caught.value.url.startswith(url)
    assert any("retrying" in r.getMessage() for r in caplog.records)


def test_bad_arguments_are_refused_before_any_request() -> None:
    """Identifiers, URLs, filters and delays are checked when the subscriber is made."""
    good = {"subscriber_id": "a", "subscriber_topic": "t", "policy_filters": [{"policy-id": "x"}]}
    with pytest.raises(ValueError, match="subscriber_id"):
        PolicySubscriber("http://h", **{**good, "subscriber_id": "a b"})
    with pytest.raises(ValueError, match="subscriber_topic"):
        PolicySubscriber("http://h", **{**good, "subscriber_topic": "t:1"})
    with pytest.raises(ValueError, match="router_url"):
        PolicySubscriber("http://h", router_url="tcp://h", **good)
    with pytest.raises(ValueError, match="policy_filters"):
        PolicySubscriber("http://h", **{**good, "policy_filters": []})
    with pytest.raises(ValueError, match="backoff_initial"):
        PolicySubscriber("http://h", timings=Timings(backoff_initial=-1), **good)
    with pytest.raises(ValueError, match="backoff_max"):
        Timings(backoff_initial=2, backoff_max=1)
    with pytest.raises(ValueError, match="request_timeout"):
        Timings(request_timeout=0)
    with pytest.raises(ValueError, match="poll_limit"):
        PolicySubscriber("http://h", poll_limit=0, **good)


async def test_run_refuses_to_block_an_event_loop(server: LiveServer) -> None:
    """``run()`` inside a running event loop raises instead of blocking it, and a subscriber
    opens only once.
    """
    sub = subscriber(server.url)
    with pytest.raises(RuntimeError, match="consume"):
        sub.run(lambda change: None)
    async with sub:
        pass
    with pytest.raises(RuntimeError, match="once"):
        async with sub:
            pass
