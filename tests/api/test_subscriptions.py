"""Subscriptions through the API: insert, update, read, list, delete, and what they publish."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.helpers import (
    RFC3339,
    SUBSCRIPTIONS,
    TCA_TYPE,
    assert_no_message,
    assert_onap_error,
    check_snapshot,
    of,
    poll,
    push,
    revision,
    subscribe,
    subscription,
    tosca,
    undeploy,
)
from tests.conftest import LiveServer, load_policy, wait_for

RESTART = {"policy-id": "onap.restart.tca"}
SCALEOUT = {"policy-id": "onap.scaleout.tca"}


def record(
    subscriber_id: str, topic: str, filters: list[dict[str, Any]], **onap: Any
) -> dict[str, Any]:
    """The stored record the API answers for a subscription."""
    return {
        "subscriber_id": subscriber_id,
        "subscriber_topic": topic,
        "action": "configure",
        "ONAPName": onap.get("ONAPName"),
        "ONAPComponent": onap.get("ONAPComponent"),
        "ONAPInstance": onap.get("ONAPInstance"),
        "policy-filters": filters,
    }


async def test_insert_answers_201_then_update_answers_200(
    server: LiveServer, client: httpx.AsyncClient
) -> None:
    """The first POST of a subscriber_id inserts (201), the next one updates (200), each with
    the stored record and the revision it took.
    """
    onap = {"ONAPName": "DCAE", "ONAPComponent": "tca", "ONAPInstance": "tca-1"}
    inserted = await subscribe(client, "tca-1", "t1", [RESTART], expect=201, **onap)
    assert inserted == {
        **record("tca-1", "t1", [RESTART], **onap),
        "revision": revision(server),
        "policies": {},
    }
    updated = await subscribe(client, "tca-1", "t1", [SCALEOUT], expect=200, **onap)
    assert updated == {
        **record("tca-1", "t1", [SCALEOUT], **onap),
        "revision": inserted["revision"] + 1,
        "policies": {},
    }


async def test_defaults_action_onap_fields_and_return_policies(client: httpx.AsyncClient) -> None:
    """Without them, action is configure, the ONAP* fields are null and policies are returned."""
    restart = load_policy("onap.restart.tca")
    await push(client, restart)
    answer = await subscribe(client, "tca-1", "t1", [RESTART])
    assert answer["action"] == "configure"
    assert (answer["ONAPName"], answer["ONAPComponent"], answer["ONAPInstance"]) == (
        None,
        None,
        None,
    )
    assert answer["policies"] == {"onap.restart.tca": restart}


@pytest.mark.parametrize("flag", [True, False])
async def test_return_policies(client: httpx.AsyncClient, flag: bool) -> None:
    """return-policies true puts the current snapshot in the answer, false leaves it out; the
    subscribe snapshot is published either way.
    """
    restart = load_policy("onap.restart.tca")
    await push(client, restart)
    answer = await subscribe(client, "tca-1", "t1", [RESTART], **{"return-policies": flag})
    if flag:
        assert answer["policies"] == {"onap.restart.tca": restart}
    else:
        assert "policies" not in answer
    [snapshot] = await poll(client, "t1")
    assert (snapshot["event"], snapshot["policies"]) == ("subscribe", {"onap.restart.tca": restart})


async def test_every_insert_and_update_publishes_a_subscribe_snapshot(
    client: httpx.AsyncClient,
) -> None:
    """An insert, a changed update and even an identical update each publish a snapshot with
    event subscribe and the subscription's fields as they now are.
    """
    first = await subscribe(client, "tca-1", "t1", [RESTART])
    second = await subscribe(client, "tca-1", "t1", [RESTART], expect=200)
    third = await subscribe(client, "tca-1", "t1", [SCALEOUT], expect=200, ONAPName="DCAE")
    snapshots = await poll(client, "t1")
    assert [s["revision"] for s in snapshots] == [
        first["revision"],
        second["revision"],
        third["revision"],
    ]
    check_snapshot(snapshots[0], record("tca-1", "t1", [RESTART]), "subscribe", {})
    check_snapshot(snapshots[1], record("tca-1", "t1", [RESTART]), "subscribe", {})
    check_snapshot(
        snapshots[2], record("tca-1", "t1", [SCALEOUT], ONAPName="DCAE"), "subscribe", {}
    )


async def test_get_with_policies_answers_the_snapshot_of_last_revision(
    client: httpx.AsyncClient,
) -> None:
    """``?policies=true`` adds the subscriber's current policies, which are those of the
    snapshot of ``status.last_revision`` (a component's re-read: one request, exactly
    labelled); a change that is not the subscriber's moves neither; without the flag, no
    policies; a flag that is not a boolean is a 400.
    """
    await subscribe(client, "tca-1", "t1", [RESTART])
    pushed = await push(client, load_policy("onap.restart.tca"))
    [delivered] = [m for m in await poll(client, "t1") if m["revision"] == pushed["revision"]]

    async def read() -> dict[str, Any]:
        r = await client.get(f"{SUBSCRIPTIONS}/tca-1", params={"policies": "true"})
        assert r.status_code == 200, r.text
        answer: dict[str, Any] = r.json()
        return answer

    shown = await read()
    assert shown["status"]["last_revision"] == pushed["revision"]
    assert shown["policies"] == delivered["policies"]
    other = await push(client, load_policy("onap.scaleout.tca"))  # not this subscriber's
    again = await read()
    assert other["revision"] > pushed["revision"]
    assert again["status"]["last_revision"] == pushed["revision"]
    assert again["policies"] == delivered["policies"]
    assert "policies" not in (await client.get(f"{SUBSCRIPTIONS}/tca-1")).json()
    assert_onap_error(await client.get(f"{SUBSCRIPTIONS}/tca-1", params={"policies": "maybe"}), 400)


async def test_get_one_with_status(client: httpx.AsyncClient) -> None:
    """GET of a subscription gives its record and a status whose last_revision and
    last_published_at follow the snapshots and whose last_consumed_at is set by a group read.
    """
    answer = await subscribe(client, "tca-1", "t1", [RESTART], ONAPName="DCAE")
    r = await client.get(f"{SUBSCRIPTIONS}/tca-1")
    assert r.status_code == 200
    shown = r.json()
    assert {k: v for k, v in shown.items() if k != "status"} == {
        **record("tca-1", "t1", [RESTART], ONAPName="DCAE"),
        "revision": answer["revision"],
    }
    status = shown["status"]
    assert set(status) == {"last_revision", "last_published_at", "last_consumed_at"}
    assert status["last_revision"] == answer["revision"]
    assert RFC3339.match(status["last_published_at"])
    assert status["last_consumed_at"] is None

    pushed = await push(client, load_policy("onap.restart.tca"))
    await push(client, load_policy("onap.scaleout.tca"))  # not this subscriber's
    assert len(await poll(client, "t1")) == 2

    async def consumed() -> bool:
        status = (await client.get(f"{SUBSCRIPTIONS}/tca-1")).json()["status"]
        return status["last_consumed_at"] is not None

    # The group's position moves once the answer is written: on a shared store it is
    # committed just after, so a request racing the answer may not see it yet.
    await wait_for(consumed)
    status = (await client.get(f"{SUBSCRIPTIONS}/tca-1")).json()["status"]
    assert status["last_revision"] == pushed["revision"]
    assert RFC3339.match(status["last_published_at"])
    assert status["last_consumed_at"] is not None
    assert RFC3339.match(status["last_consumed_at"])
    assert status["last_consumed_at"] >= status["last_published_at"]


async def test_list_and_filter_by_topic(client: httpx.AsyncClient) -> None:
    """GET of the collection lists every subscription; ?topic= keeps that topic's only."""
    await subscribe(client, "b-sub", "shared", [RESTART])
    await subscribe(client, "a-sub", "shared", [SCALEOUT])
    await subscribe(client, "c-sub", "own", [RESTART])
    everything = (await client.get(SUBSCRIPTIONS)).json()
    assert [s["subscriber_id"] for s in everything["subscriptions"]] == ["a-sub", "b-sub", "c-sub"]
    assert everything["subscriptions"][0] == {
        **record("a-sub", "shared", [SCALEOUT]),
        "revision": 2,
    }
    shared = (await client.get(SUBSCRIPTIONS, params={"topic": "shared"})).json()
    assert [s["subscriber_id"] for s in shared["subscriptions"]] == ["a-sub", "b-sub"]
    none = (await client.get(SUBSCRIPTIONS, params={"topic": "nobody-here"})).json()
    assert none == {"subscriptions": []}


async def test_list_stale(client: httpx.AsyncClient) -> None:
    """?stale= lists subscriptions whose topic holds a message nobody read for that long."""
    await subscribe(client, "unread", "t-unread", [RESTART])
    await subscribe(client, "read", "t-read", [RESTART])
    await poll(client, "t-read")
    stale = (await client.get(SUBSCRIPTIONS, params={"stale": "0"})).json()
    assert [s["subscriber_id"] for s in stale["subscriptions"]] == ["unread"]
    recent = (await client.get(SUBSCRIPTIONS, params={"stale": "3600"})).json()
    assert recent == {"subscriptions": []}


async def test_delete_then_404_and_no_more_snapshots(
    server: LiveServer, client: httpx.AsyncClient
) -> None:
    """DELETE answers 204 and then 404; pushes after it notify nobody and publish nothing."""
    await subscribe(client, "tca-1", "t1", [RESTART])
    assert len(await poll(client, "t1")) == 1
    r = await client.delete(f"{SUBSCRIPTIONS}/tca-1")
    assert (r.status_code, r.content) == (204, b"")
    assert_onap_error(await client.get(f"{SUBSCRIPTIONS}/tca-1"), 404)
    assert (await client.get(SUBSCRIPTIONS)).json() == {"subscriptions": []}
    before = revision(server)
    assert_onap_error(await client.delete(f"{SUBSCRIPTIONS}/tca-1"), 404)
    assert revision(server) == before
    pushed = await push(client, load_policy("onap.restart.tca"))
    assert pushed["notified"] == 0
    assert (await undeploy(client, "onap.restart.tca"))["notified"] == 0
    await assert_no_message(client, "t1")


async def test_subscribe_again_after_delete_is_an_insert(client: httpx.AsyncClient) -> None:
    """A subscriber_id deleted and posted again is inserted anew (201) and notified again."""
    await subscribe(client, "tca-1", "t1", [RESTART])
    assert (await client.delete(f"{SUBSCRIPTIONS}/tca-1")).status_code == 204
    await subscribe(client, "tca-1", "t1", [RESTART], expect=201)
    assert (await push(client, load_policy("onap.restart.tca")))["notified"] == 1


async def test_changing_filters_changes_which_pushes_notify(client: httpx.AsyncClient) -> None:
    """After an update of its filters, a subscription is notified by pushes matching the new
    filters and no longer by those matching only the old ones.
    """
    await subscribe(client, "tca-1", "t1", [RESTART])
    assert (await push(client, load_policy("onap.restart.tca")))["notified"] == 1
    answer = await subscribe(client, "tca-1", "t1", [SCALEOUT], expect=200)
    assert answer["policies"] == {}
    await poll(client, "t1")
    assert (await push(client, tosca("onap.restart.tca", "2.0.0")))["notified"] == 0
    await assert_no_message(client, "t1")
    scaleout = load_policy("onap.scaleout.tca")
    assert (await push(client, scaleout))["notified"] == 1
    [snapshot] = await poll(client, "t1")
    assert snapshot["policies"] == {"onap.scaleout.tca": scaleout}


async def test_changing_topic_moves_the_snapshots(client: httpx.AsyncClient) -> None:
    """After an update of its topic, a subscription's snapshots go to the new topic only."""
    await subscribe(client, "tca-1", "old-topic", [RESTART])
    await poll(client, "old-topic")
    await subscribe(client, "tca-1", "new-topic", [RESTART], expect=200)
    [moved] = await poll(client, "new-topic")
    assert (moved["event"], moved["subscriber_topic"]) == ("subscribe", "new-topic")
    await push(client, load_policy("onap.restart.tca"))
    [update] = await poll(client, "new-topic")
    assert update["event"] == "update"
    await assert_no_message(client, "old-topic")


async def test_shared_topic_each_subscriber_gets_its_own_snapshots(
    client: httpx.AsyncClient,
) -> None:
    """Two subscribers on one topic each get snapshots of their own filters; a push matching
    only one of them notifies only that one.
    """
    onap = {"ONAPName": "DCAE", "ONAPComponent": "tca"}
    await subscribe(client, "tca-1", "shared", [RESTART], ONAPInstance="tca-1", **onap)
    await subscribe(client, "tca-2", "shared", [SCALEOUT], ONAPInstance="tca-2", **onap)
    starting = await poll(client, "shared")
    assert [(s["subscriber_id"], s["ONAPInstance"], s["event"]) for s in starting] == [
        ("tca-1", "tca-1", "subscribe"),
        ("tca-2", "tca-2", "subscribe"),
    ]
    restart = load_policy("onap.restart.tca")
    assert (await push(client, restart))["notified"] == 1
    [only] = await poll(client, "shared")
    assert (only["subscriber_id"], only["policies"]) == ("tca-1", {"onap.restart.tca": restart})
    scaleout = load_policy("onap.scaleout.tca")
    both = await push(client, scaleout, tosca("onap.restart.tca", "1.0.1"))
    assert both["notified"] == 2
    snapshots = await poll(client, "shared")
    assert len(snapshots) == 2
    [one] = of(snapshots, "tca-1")
    [two] = of(snapshots, "tca-2")
    assert one["policies"] == {"onap.restart.tca": tosca("onap.restart.tca", "1.0.1")}
    assert two["policies"] == {"onap.scaleout.tca": scaleout}
    assert one["revision"] == two["revision"] == both["revision"]


async def test_shared_topic_with_identical_filters(client: httpx.AsyncClient) -> None:
    """Subscribers with identical filters on one topic are each notified with their own fields."""
    await subscribe(client, "tca-1", "shared", [RESTART], ONAPInstance="tca-1")
    await subscribe(client, "tca-2", "shared", [RESTART], ONAPInstance="tca-2")
    await poll(client, "shared")
    restart = load_policy("onap.restart.tca")
    assert (await push(client, restart))["notified"] == 2
    snapshots = await poll(client, "shared")
    assert sorted((s["subscriber_id"], s["ONAPInstance"]) for s in snapshots) == [
        ("tca-1", "tca-1"),
        ("tca-2", "tca-2"),
    ]
    assert all(s["policies"] == {"onap.restart.tca": restart} for s in snapshots)


FILTER_CASES = {
    "id-string": ([{"policy-id": "onap.restart.tca"}], {"onap.restart.tca"}),
    "id-list": (
        [{"policy-id": ["onap.restart.tca", "guard.minmax.vdns", "not.deployed"]}],
        {"onap.restart.tca", "guard.minmax.vdns"},
    ),
    "type-string": (
        [{"policy-type": TCA_TYPE}],
        {"onap.restart.tca", "onap.scaleout.tca", "onap.vfirewall.tca"},
    ),
    "type-list": (
        [{"policy-type": ["onap.policies.controlloop.guard.common.MinMax", "no.such.type"]}],
        {"guard.minmax.vdns"},
    ),
    "type-is-case-sensitive": ([{"policy-type": TCA_TYPE.upper()}], set()),
    "id-is-exact": ([{"policy-id": "onap.restart"}], set()),
    "id-prefix": (
        [{"policy-id": "onap.*"}],
        {"onap.restart.tca", "onap.scaleout.tca", "onap.vfirewall.tca"},
    ),
    "type-prefix": (
        [{"policy-type": "onap.policies.controlloop.*"}],
        {"guard.minmax.vdns"},
    ),
    "id-or-type-in-one-filter": (
        [{"policy-id": "guard.minmax.vdns", "policy-type": "onap.policies.monitoring.*"}],
        {"guard.minmax.vdns", "onap.restart.tca", "onap.scaleout.tca", "onap.vfirewall.tca"},
    ),
    "union-of-filters": (
        [{"policy-id": "onap.restart.tca"}, {"policy-id": ["onap.vfirewall.tca"]}],
        {"onap.restart.tca", "onap.vfirewall.tca"},
    ),
}
SAMPLES = ["onap.restart.tca", "onap.scaleout.tca", "onap.vfirewall.tca", "guard.minmax.vdns"]


@pytest.mark.parametrize(
    ("filters", "expected"), list(FILTER_CASES.values()), ids=list(FILTER_CASES)
)
async def test_filter_semantics(
    client: httpx.AsyncClient, filters: list[dict[str, Any]], expected: set[str]
) -> None:
    """A subscription's snapshot, subscribe answer and notification follow the filter
    semantics: ids or types, exact and case-sensitive, `*` as prefix, union over filters.
    """
    samples = {name: load_policy(name) for name in SAMPLES}
    await subscribe(client, "watcher", "t1", filters)
    await poll(client, "t1")
    pushed = await push(client, *samples.values())
    assert pushed["notified"] == (1 if expected else 0)
    if expected:
        [snapshot] = await poll(client, "t1")
        assert snapshot["policies"] == {name: samples[name] for name in expected}
    else:
        await assert_no_message(client, "t1")
    again = await subscribe(client, "watcher", "t1", filters, expect=200)
    assert again["policies"] == {name: samples[name] for name in expected}


async def test_subscription_request_body_is_validated_before_anything_changes(
    server: LiveServer, client: httpx.AsyncClient
) -> None:
    """An update that fails validation leaves the stored subscription as it was."""
    await subscribe(client, "tca-1", "t1", [RESTART])
    before = (await client.get(f"{SUBSCRIPTIONS}/tca-1")).json()
    at = revision(server)
    r = await client.post(f"{SUBSCRIPTIONS}/tca-1", json=subscription("t2", []))
    assert_onap_error(r, 400, "policy-filters")
    assert (await client.get(f"{SUBSCRIPTIONS}/tca-1")).json() == before
    assert revision(server) == at


@pytest.mark.parametrize(
    "subscriber_id",
    ["a" * 255, "policies_DCAE_tca:tca-1", "A.b-c_d:9"],
    ids=["255-chars", "with-colon", "every-punctuation"],
)
async def test_subscriber_id_grammar_accepts(client: httpx.AsyncClient, subscriber_id: str) -> None:
    """A subscriber_id of 1-255 of [A-Za-z0-9._:-] is accepted and can be read back."""
    answer = await subscribe(client, subscriber_id, "t1", [RESTART])
    assert answer["subscriber_id"] == subscriber_id
    r = await client.get(f"{SUBSCRIPTIONS}/{subscriber_id}")
    assert (r.status_code, r.json()["subscriber_id"]) == (200, subscriber_id)


async def test_topic_grammar_accepts_255_chars(client: httpx.AsyncClient) -> None:
    """A subscriber_topic of 255 of [A-Za-z0-9._-] is accepted and carries the snapshots."""
    topic = "T._-9" * 51
    assert len(topic) == 255
    await subscribe(client, "tca-1", topic, [RESTART])
    [snapshot] = await poll(client, topic)
    assert snapshot["subscriber_topic"] == topic
