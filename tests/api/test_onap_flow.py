"""The whole ONAP flow through the real server: subscribe, push, long-poll, undeploy."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import httpx
import orjson

from tests.api.helpers import (
    POLICIES,
    SUBSCRIPTIONS,
    assert_no_message,
    check_snapshot,
    of,
    poll,
    push,
    subscribe,
    tosca,
    undeploy,
    wait_held,
)
from tests.conftest import LiveServer, load_policy, make_settings, start_server, stop_server

TOPIC = "policies_DCAE_tca_tca-1"
FILTERS = [{"policy-id": ["onap.scaleout.tca", "onap.restart.tca"]}]
ONAP = {"ONAPName": "DCAE", "ONAPComponent": "tca", "ONAPInstance": "tca-1"}


async def test_subscribe_push_poll_undeploy(server: LiveServer, client: httpx.AsyncClient) -> None:
    """A subscriber gets its starting snapshot, then a snapshot with each pushed policy, then one
    without the policy once it is undeployed, with revisions strictly increasing.
    """
    answer = await subscribe(client, "tca-1", TOPIC, FILTERS, action="configure", **ONAP)
    record = {
        "subscriber_id": "tca-1",
        "subscriber_topic": TOPIC,
        "action": "configure",
        **ONAP,
        "policy-filters": FILTERS,
    }
    assert {k: answer[k] for k in record} == record
    assert answer["policies"] == {}

    [first] = await poll(client, TOPIC)
    check_snapshot(first, record, "subscribe", {})
    assert first["revision"] == answer["revision"]

    # A held long-poll is woken by the push and carries the new snapshot.
    held = asyncio.create_task(client.get(f"/events/{TOPIC}/g/c1", params={"timeout": 20000}))
    await wait_held(server, 1)
    restart = load_policy("onap.restart.tca")
    pushed = await push(client, restart)
    assert pushed["deployed"] == [{"policy-id": "onap.restart.tca", "policy-version": "1.0.0"}]
    assert pushed["undeployed"] == []
    assert pushed["notified"] == 1
    reply = await asyncio.wait_for(held, timeout=10)
    assert reply.status_code == 200
    [second] = [orjson.loads(text) for text in reply.json()]
    check_snapshot(second, record, "update", {"onap.restart.tca": restart})
    assert second["revision"] == pushed["revision"] > first["revision"]

    removed = await undeploy(client, "onap.restart.tca")
    assert removed["undeployed"] == [{"policy-id": "onap.restart.tca", "policy-version": "1.0.0"}]
    assert removed["notified"] == 1
    [third] = await poll(client, TOPIC)
    check_snapshot(third, record, "update", {})
    assert third["revision"] == removed["revision"] > second["revision"]
    await assert_no_message(client, TOPIC)


async def test_snapshot_is_the_full_matching_set(client: httpx.AsyncClient) -> None:
    """Each snapshot holds every deployed policy that matches, not only the changed one, and
    never a policy the filters do not match.
    """
    await subscribe(client, "tca-1", TOPIC, FILTERS, **ONAP)
    restart, scaleout = load_policy("onap.restart.tca"), load_policy("onap.scaleout.tca")
    await push(client, restart)
    await push(client, scaleout, load_policy("onap.vfirewall.tca"))
    snapshots = await poll(client, TOPIC)
    assert [s["event"] for s in snapshots] == ["subscribe", "update", "update"]
    assert [s["policies"] for s in snapshots] == [
        {},
        {"onap.restart.tca": restart},
        {"onap.restart.tca": restart, "onap.scaleout.tca": scaleout},
    ]


async def test_subscribe_returns_current_policies(client: httpx.AsyncClient) -> None:
    """A subscriber arriving after the push gets the matching policies in the subscribe answer
    and in its first snapshot.
    """
    restart = load_policy("onap.restart.tca")
    await push(client, restart, load_policy("guard.minmax.vdns"))
    answer = await subscribe(client, "tca-1", TOPIC, FILTERS, **ONAP)
    assert answer["policies"] == {"onap.restart.tca": restart}
    [snapshot] = await poll(client, TOPIC)
    assert snapshot["event"] == "subscribe"
    assert snapshot["policies"] == {"onap.restart.tca": restart}
    assert snapshot["revision"] == answer["revision"]


async def test_revisions_strictly_increase_per_subscriber(client: httpx.AsyncClient) -> None:
    """Over pushes, replacements, undeployments and re-subscriptions, a subscriber's snapshot
    revisions strictly increase and match the answers that caused them.
    """
    caused = [(await subscribe(client, "tca-1", TOPIC, FILTERS, **ONAP))["revision"]]
    caused.append((await push(client, load_policy("onap.restart.tca")))["revision"])
    caused.append((await push(client, load_policy("onap.scaleout.tca")))["revision"])
    caused.append(
        (await subscribe(client, "tca-1", TOPIC, FILTERS, expect=200, **ONAP))["revision"]
    )
    newer = {**load_policy("onap.restart.tca"), "version": "1.0.1"}
    newer["metadata"] = {"policy-id": "onap.restart.tca", "policy-version": "1.0.1"}
    caused.append((await push(client, newer))["revision"])
    caused.append((await undeploy(client, "onap.scaleout.tca"))["revision"])
    revisions = [s["revision"] for s in of(await poll(client, TOPIC), "tca-1")]
    assert revisions == caused
    assert all(a < b for a, b in itertools.pairwise(revisions))


async def test_late_consumer_group_reads_from_the_oldest(client: httpx.AsyncClient) -> None:
    """A consumer group that starts after the changes still reads every retained snapshot,
    oldest first, ending with the newest state.
    """
    await subscribe(client, "tca-1", TOPIC, FILTERS, **ONAP)
    restart = load_policy("onap.restart.tca")
    await push(client, restart)
    assert len(await poll(client, TOPIC, "early")) == 2
    late = await poll(client, TOPIC, "late")
    assert [s["event"] for s in late] == ["subscribe", "update"]
    assert late[-1]["policies"] == {"onap.restart.tca": restart}


async def test_state_is_visible_through_every_read_api(client: httpx.AsyncClient) -> None:
    """After the flow, the PAP listing, the decision API and the subscription agree."""
    await subscribe(client, "tca-1", TOPIC, FILTERS, **ONAP)
    restart = load_policy("onap.restart.tca")
    await push(client, restart)
    listing = (await client.get(POLICIES)).json()
    assert listing == {
        "policies": [
            {
                "policy-id": "onap.restart.tca",
                "policy-version": "1.0.0",
                "policy-type": "onap.policies.monitoring.tcagen2",
                "policy-type-version": "1.0.0",
            }
        ]
    }
    decision = await client.post(
        "/decision/v1", json={"action": "configure", "resource": FILTERS[0], **ONAP}
    )
    assert decision.json() == {"policies": {"onap.restart.tca": restart}}
    shown = (await client.get(f"{SUBSCRIPTIONS}/tca-1")).json()
    assert shown["status"]["last_revision"] == shown["revision"] + 1


async def test_concurrent_changes_keep_revisions_increasing(client: httpx.AsyncClient) -> None:
    """Concurrent pushes and re-subscriptions each publish one snapshot, and the topic carries
    them in strictly increasing revision order.
    """
    await subscribe(client, "tca-1", TOPIC, [{"policy-id": "*"}])

    async def change(i: int) -> int:
        if i % 4 == 0:
            answer = await subscribe(
                client, "tca-1", TOPIC, [{"policy-id": "*"}], expect=200, ONAPInstance=str(i)
            )
        else:
            answer = await push(client, tosca(f"p{i % 3}", str(i)))
            assert answer["notified"] == 1
        revision: int = answer["revision"]
        return revision

    caused = await asyncio.gather(*(change(i) for i in range(1, 25)))
    revisions = [s["revision"] for s in of(await poll(client, TOPIC), "tca-1")][1:]
    assert revisions == sorted(caused)
    assert all(a < b for a, b in itertools.pairwise(revisions))


async def test_state_and_positions_survive_a_restart(tmp_path: Path) -> None:
    """After a restart on the same store, policies, subscriptions and consumer positions are
    as acknowledged, and the next snapshot's revision is above every earlier one.
    """
    settings = make_settings(tmp_path)
    live, task = await start_server(settings)
    try:
        async with httpx.AsyncClient(base_url=live.url) as http:
            await subscribe(http, "tca-1", TOPIC, FILTERS, **ONAP)
            pushed = await push(http, load_policy("onap.restart.tca"))
            assert len(await poll(http, TOPIC)) == 2
    finally:
        await stop_server(live, task)
    live, task = await start_server(settings)
    try:
        async with httpx.AsyncClient(base_url=live.url) as http:
            assert [p["policy-id"] for p in (await http.get(POLICIES)).json()["policies"]] == [
                "onap.restart.tca"
            ]
            shown = (await http.get(f"{SUBSCRIPTIONS}/tca-1")).json()
            assert shown["status"]["last_revision"] == pushed["revision"]
            await assert_no_message(http, TOPIC)
            removed = await undeploy(http, "onap.restart.tca")
            assert removed["revision"] > pushed["revision"]
            [snapshot] = await poll(http, TOPIC)
            assert (snapshot["revision"], snapshot["policies"]) == (removed["revision"], {})
    finally:
        await stop_server(live, task)
