"""The PAP webhook: deploy, replace, undeploy, list, and PDP_UPDATE in both generations."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from tests.api.helpers import (
    PDP_UPDATE,
    POLICIES,
    TCA_TYPE,
    UUID,
    assert_no_message,
    assert_onap_error,
    poll,
    push,
    revision,
    state,
    subscribe,
    tosca,
    undeploy,
)
from tests.conftest import LiveServer, load_policy

ALL_TCA = [{"policy-type": TCA_TYPE}]


def ids(listing: dict[str, Any]) -> dict[str, str]:
    """policy-id -> policy-version of a GET /pap/v1/policies answer."""
    return {p["policy-id"]: p["policy-version"] for p in listing["policies"]}


async def deployed(client: httpx.AsyncClient) -> dict[str, str]:
    r = await client.get(POLICIES)
    assert r.status_code == 200
    return ids(r.json())


async def test_insert_lists_and_shows_the_policy(
    server: LiveServer, client: httpx.AsyncClient
) -> None:
    """A push deploys its policies: the answer names them, the list shows their identity and
    type, and GET one gives each body exactly as pushed.
    """
    restart, guard = load_policy("onap.restart.tca"), load_policy("guard.minmax.vdns")
    answer = await push(client, restart, guard)
    assert answer == {
        "revision": revision(server),
        "deployed": [
            {"policy-id": "onap.restart.tca", "policy-version": "1.0.0"},
            {"policy-id": "guard.minmax.vdns", "policy-version": "1.0.0"},
        ],
        "undeployed": [],
        "notified": 0,
    }
    listing = (await client.get(POLICIES)).json()
    assert sorted(listing["policies"], key=lambda p: p["policy-id"]) == [
        {
            "policy-id": "guard.minmax.vdns",
            "policy-version": "1.0.0",
            "policy-type": "onap.policies.controlloop.guard.common.MinMax",
            "policy-type-version": "1.0.0",
        },
        {
            "policy-id": "onap.restart.tca",
            "policy-version": "1.0.0",
            "policy-type": TCA_TYPE,
            "policy-type-version": "1.0.0",
        },
    ]
    r = await client.get(f"{POLICIES}/onap.restart.tca")
    assert (r.status_code, r.json()) == (200, restart)


async def test_new_version_replaces_the_old(client: httpx.AsyncClient) -> None:
    """Deploying another version of a deployed policy-id replaces it everywhere."""
    await subscribe(client, "tca-1", "t1", ALL_TCA)
    await push(client, tosca("p", "1.0.0"))
    newer = tosca("p", "2.0.0", properties={"threshold": 2})
    answer = await push(client, newer)
    assert answer["deployed"] == [{"policy-id": "p", "policy-version": "2.0.0"}]
    assert answer["notified"] == 1
    assert await deployed(client) == {"p": "2.0.0"}
    assert (await client.get(f"{POLICIES}/p")).json() == newer
    snapshots = await poll(client, "t1")
    assert [s["policies"] for s in snapshots] == [
        {},
        {"p": tosca("p", "1.0.0")},
        {"p": newer},
    ]


async def test_identical_redeploy_changes_nothing(
    server: LiveServer, client: httpx.AsyncClient
) -> None:
    """Re-deploying the policy exactly as deployed keeps the revision, notifies nobody and
    publishes nothing.
    """
    await subscribe(client, "tca-1", "t1", ALL_TCA)
    first = await push(client, load_policy("onap.restart.tca"))
    await poll(client, "t1")
    before = await state(client, server)
    again = await push(client, load_policy("onap.restart.tca"))
    assert again == {"revision": first["revision"], "deployed": [], "undeployed": [], "notified": 0}
    assert await state(client, server) == before
    await assert_no_message(client, "t1")


async def test_partly_identical_push_notifies_for_the_changed_policy_only(
    client: httpx.AsyncClient,
) -> None:
    """A push of one unchanged and one changed policy deploys and notifies for the changed one."""
    await subscribe(client, "restart", "t-restart", [{"policy-id": "onap.restart.tca"}])
    await subscribe(client, "scaleout", "t-scaleout", [{"policy-id": "onap.scaleout.tca"}])
    await push(client, load_policy("onap.restart.tca"), load_policy("onap.scaleout.tca"))
    await poll(client, "t-restart")
    await poll(client, "t-scaleout")
    answer = await push(
        client, load_policy("onap.restart.tca"), tosca("onap.scaleout.tca", "1.0.1")
    )
    assert answer["deployed"] == [{"policy-id": "onap.scaleout.tca", "policy-version": "1.0.1"}]
    assert answer["notified"] == 1
    await assert_no_message(client, "t-restart")
    [snapshot] = await poll(client, "t-scaleout")
    assert snapshot["policies"] == {"onap.scaleout.tca": tosca("onap.scaleout.tca", "1.0.1")}


async def test_delete_undeploys_then_404(server: LiveServer, client: httpx.AsyncClient) -> None:
    """DELETE of a deployed policy answers 200 with it undeployed, then 404 with nothing
    changed; GET one is a 404 after it.
    """
    await subscribe(client, "tca-1", "t1", ALL_TCA)
    await push(client, load_policy("onap.restart.tca"), load_policy("onap.scaleout.tca"))
    answer = await undeploy(client, "onap.restart.tca")
    assert answer == {
        "revision": revision(server),
        "deployed": [],
        "undeployed": [{"policy-id": "onap.restart.tca", "policy-version": "1.0.0"}],
        "notified": 1,
    }
    assert await deployed(client) == {"onap.scaleout.tca": "1.0.0"}
    assert_onap_error(await client.get(f"{POLICIES}/onap.restart.tca"), 404)
    before = await state(client, server)
    assert_onap_error(await client.delete(f"{POLICIES}/onap.restart.tca"), 404)
    assert await state(client, server) == before
    last = (await poll(client, "t1"))[-1]
    assert last["policies"] == {"onap.scaleout.tca": load_policy("onap.scaleout.tca")}


async def test_versions_are_kept_as_given_and_listed_as_strings(client: httpx.AsyncClient) -> None:
    """An integer policy-version is listed as a string while the body keeps it as given, with
    every unknown extra field.
    """
    policy = {**tosca("p", 3), "derived_from": "tosca.policies.Root", "x-extra": {"a": [1, 2]}}
    policy["metadata"]["x-owner"] = "team-a"
    answer = await push(client, policy)
    assert answer["deployed"] == [{"policy-id": "p", "policy-version": "3"}]
    assert await deployed(client) == {"p": "3"}
    assert (await client.get(f"{POLICIES}/p")).json() == policy


async def test_identity_is_name_and_version_and_metadata_is_filled(
    client: httpx.AsyncClient,
) -> None:
    """A policy without metadata is identified by its name and version, and is kept with
    ``metadata.policy-id`` / ``policy-version`` filled in, as ONAP's policy-api stores it; a
    push of the same file again changes nothing.
    """
    policy = {"type": TCA_TYPE, "name": "bare", "version": "1.2.3"}
    answer = await push(client, policy)
    assert answer["deployed"] == [{"policy-id": "bare", "policy-version": "1.2.3"}]
    filled = {**policy, "metadata": {"policy-id": "bare", "policy-version": "1.2.3"}}
    assert (await client.get(f"{POLICIES}/bare")).json() == filled
    assert (await push(client, policy))["deployed"] == []


async def test_a_name_that_metadata_contradicts_is_refused(client: httpx.AsyncClient) -> None:
    """A policy whose ``name`` and ``metadata.policy-id`` differ is a 400 naming both, and
    nothing is deployed under either.
    """
    policy = tosca("by-metadata")
    policy["name"] = "by-name"
    body = assert_onap_error(await client.post(POLICIES, json={"policies": [policy]}), 400)
    assert "'by-name'" in body["error"] and "'by-metadata'" in body["error"]
    assert await deployed(client) == {}


async def test_big_integers_in_a_policy_are_refused(client: httpx.AsyncClient) -> None:
    """A policy property holding an integer beyond 64 bits is a 400 (it could not be kept
    exactly), while the largest 64-bit integers are stored and returned unchanged.
    """
    raw = (
        b'{"policies": [{"type": "t", "name": "p", "version": "1", '
        b'"properties": {"n": 100000000000000000000000000000}}]}'
    )
    r = await client.post(POLICIES, content=raw, headers={"content-type": "application/json"})
    body = assert_onap_error(r, 400)
    assert "64 bits" in body["error"]
    assert_onap_error(await client.get(f"{POLICIES}/p"), 404)
    raw = raw.replace(b"100000000000000000000000000000", b"-9223372036854775808")
    r = await client.post(POLICIES, content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    shown = await client.get(f"{POLICIES}/p")
    assert b'"n":-9223372036854775808' in shown.content.replace(b" ", b"")


async def test_deeply_nested_policy_is_refused(client: httpx.AsyncClient) -> None:
    """A policy nested deeper than the server can write back is a 400, never a 500."""
    deep = b"[" * 300 + b"]" * 300
    raw = b'{"policies": [{"type": "t", "name": "p", "version": "1", "properties": {"n": %s}}]}'
    r = await client.post(
        POLICIES, content=raw % deep, headers={"content-type": "application/json"}
    )
    body = assert_onap_error(r, 400)
    assert "deeper" in body["error"]
    assert_onap_error(await client.get(f"{POLICIES}/p"), 404)


async def test_one_invalid_policy_stores_none(
    server: LiveServer, client: httpx.AsyncClient
) -> None:
    """A push with one invalid policy among valid ones deploys none of them and publishes
    nothing.
    """
    await subscribe(client, "tca-1", "t1", [{"policy-id": "*"}])
    await poll(client, "t1")
    before = await state(client, server)
    invalid = {"type": TCA_TYPE, "name": "no-version"}
    r = await client.post(
        POLICIES,
        json={
            "policies": [load_policy("onap.restart.tca"), invalid, load_policy("guard.minmax.vdns")]
        },
    )
    assert_onap_error(r, 400, "policies[1]")
    assert await deployed(client) == {}
    assert await state(client, server) == before
    await assert_no_message(client, "t1")


# -- PDP_UPDATE ---------------------------------------------------------------------------


def check_pdp_status(
    status: dict[str, Any], update: dict[str, Any], policies: dict[str, str], notified: int
) -> None:
    """The PDP_STATUS answer of API.md for an update that succeeded."""
    assert status["messageName"] == "PDP_STATUS"
    assert UUID.match(status["requestId"]) and status["requestId"] != update.get("requestId")
    assert isinstance(status["timestampMs"], int) and status["timestampMs"] > 1_600_000_000_000
    assert status["pdpType"] == "policy-pubsub"
    assert (status["state"], status["healthy"]) == ("ACTIVE", "HEALTHY")
    assert {p["name"]: p["version"] for p in status["policies"]} == policies
    assert all(set(p) == {"name", "version"} for p in status["policies"])
    response = status["response"]
    assert response["responseTo"] == update.get("requestId")
    assert response["responseStatus"] == "SUCCESS"
    assert isinstance(response["responseMessage"], str) and response["responseMessage"]
    assert isinstance(status["revision"], int)
    assert status["notified"] == notified


async def test_pdp_update_delta(server: LiveServer, client: httpx.AsyncClient) -> None:
    """The delta PDP_UPDATE deploys onap.restart.tca 1.0.1 over 1.0.0, undeploys
    onap.vfirewall.tca 2.0.0, leaves the rest, and answers a PDP_STATUS.
    """
    await subscribe(client, "tca-1", "t1", ALL_TCA)
    await subscribe(client, "guard", "t-guard", [{"policy-id": "guard.minmax.vdns"}])
    await push(
        client,
        load_policy("onap.restart.tca"),
        load_policy("onap.vfirewall.tca"),
        load_policy("onap.scaleout.tca"),
        load_policy("guard.minmax.vdns"),
    )
    await poll(client, "t1")
    await poll(client, "t-guard")
    update = load_policy("pdp-update.delta")
    r = await client.post(PDP_UPDATE, json=update)
    assert r.status_code == 200, r.text
    status = r.json()
    expected = {
        "onap.restart.tca": "1.0.1",
        "onap.scaleout.tca": "1.0.0",
        "guard.minmax.vdns": "1.0.0",
    }
    check_pdp_status(status, update, expected, notified=1)
    assert status["name"] == "policy-pubsub-0"
    assert status["response"]["responseTo"] == "3534e54f-4432-4c68-81c8-a6af07e59fb2"
    assert status["revision"] == revision(server)
    assert await deployed(client) == expected
    [snapshot] = await poll(client, "t1")
    assert snapshot["revision"] == status["revision"]
    assert snapshot["policies"] == {
        "onap.restart.tca": update["policiesToBeDeployed"][0],
        "onap.scaleout.tca": load_policy("onap.scaleout.tca"),
    }
    await assert_no_message(client, "t-guard")


async def test_pdp_update_delta_twice_notifies_nobody(
    server: LiveServer, client: httpx.AsyncClient
) -> None:
    """A delta PDP_UPDATE already applied changes nothing and still answers SUCCESS."""
    await subscribe(client, "tca-1", "t1", ALL_TCA)
    await push(client, load_policy("onap.vfirewall.tca"))
    update = load_policy("pdp-update.delta")
    first = (await client.post(PDP_UPDATE, json=update)).json()
    assert first["notified"] == 1
    await poll(client, "t1")
    before = await state(client, server)
    r = await client.post(PDP_UPDATE, json=update)
    assert r.status_code == 200
    check_pdp_status(r.json(), update, {"onap.restart.tca": "1.0.1"}, notified=0)
    assert r.json()["revision"] == first["revision"]
    assert await state(client, server) == before
    await assert_no_message(client, "t1")


async def test_pdp_update_complete_set(server: LiveServer, client: httpx.AsyncClient) -> None:
    """El Alto's `policies` is the complete desired set: listed policies are deployed (the
    identical one untouched) and deployed-but-unlisted ones are undeployed.
    """
    await subscribe(client, "tca-1", "t1", ALL_TCA)
    await subscribe(client, "guard", "t-guard", [{"policy-id": "guard.minmax.vdns"}])
    restart = load_policy("onap.restart.tca")
    await push(client, restart, load_policy("onap.scaleout.tca"), load_policy("onap.vfirewall.tca"))
    await poll(client, "t1")
    await poll(client, "t-guard")
    guard = load_policy("guard.minmax.vdns")
    update = {
        "messageName": "PDP_UPDATE",
        "requestId": "el-alto-1",
        "name": "pdp-1",
        "pdpGroup": "defaultGroup",
        "policies": [restart, guard],
    }
    r = await client.post(PDP_UPDATE, json=update)
    assert r.status_code == 200, r.text
    status = r.json()
    expected = {"onap.restart.tca": "1.0.0", "guard.minmax.vdns": "1.0.0"}
    check_pdp_status(status, update, expected, notified=2)
    assert status["response"]["responseTo"] == "el-alto-1"
    assert await deployed(client) == expected
    [tca] = await poll(client, "t1")
    assert tca["policies"] == {"onap.restart.tca": restart}
    [guarded] = await poll(client, "t-guard")
    assert guarded["policies"] == {"guard.minmax.vdns": guard}
    assert tca["revision"] == guarded["revision"] == status["revision"] == revision(server)


async def test_pdp_update_empty_complete_set_undeploys_everything(
    client: httpx.AsyncClient,
) -> None:
    """An El Alto PDP_UPDATE with an empty `policies` undeploys every deployed policy."""
    await subscribe(client, "tca-1", "t1", ALL_TCA)
    await push(client, load_policy("onap.restart.tca"), load_policy("guard.minmax.vdns"))
    await poll(client, "t1")
    update = {"messageName": "PDP_UPDATE", "requestId": "r-empty", "policies": []}
    r = await client.post(PDP_UPDATE, json=update)
    assert r.status_code == 200, r.text
    check_pdp_status(r.json(), update, {}, notified=1)
    assert await deployed(client) == {}
    [snapshot] = await poll(client, "t1")
    assert snapshot["policies"] == {}


async def test_pdp_update_invalid_changes_nothing(
    server: LiveServer, client: httpx.AsyncClient
) -> None:
    """A PDP_UPDATE whose deploy part is invalid applies none of its undeploy part either."""
    await push(client, load_policy("onap.vfirewall.tca"))
    before = await state(client, server)
    update = load_policy("pdp-update.delta")
    del update["policiesToBeDeployed"][0]["type"]
    r = await client.post(PDP_UPDATE, json=update)
    assert_onap_error(r, 400, "policiesToBeDeployed[0].type")
    assert await state(client, server) == before
    assert await deployed(client) == {"onap.vfirewall.tca": "2.0.0"}


async def test_pdp_update_answer_is_json_with_request_id(client: httpx.AsyncClient) -> None:
    """The PDP_STATUS answer is JSON and a PDP_UPDATE without requestId answers responseTo null."""
    r = await client.post(PDP_UPDATE, json={"messageName": "PDP_UPDATE", "policies": []})
    assert r.headers["content-type"].startswith("application/json")
    status = orjson.loads(r.content)
    check_pdp_status(status, {}, {}, notified=0)
    assert status["response"]["responseTo"] is None
