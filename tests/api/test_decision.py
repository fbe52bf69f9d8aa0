"""The decision API on both of its paths, against one server seeded with the sample policies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.api.helpers import (
    DECISION_PATHS,
    TCA_TYPE,
    UUID,
    assert_onap_error,
    push,
    revision,
    tosca,
    undeploy,
)
from tests.conftest import LiveServer, load_policy, make_settings, start_server, stop_server

SAMPLES = ["onap.restart.tca", "onap.scaleout.tca", "onap.vfirewall.tca", "guard.minmax.vdns"]
ONAP = {"ONAPName": "DCAE", "ONAPComponent": "tca", "ONAPInstance": "tca-1"}

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.parametrize("path", DECISION_PATHS),
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveServer]:
    """A server with the four sample policies deployed."""
    live, task = await start_server(make_settings(tmp_path_factory.mktemp("decision")))
    try:
        async with httpx.AsyncClient(base_url=live.url) as http:
            await push(http, *(load_policy(name) for name in SAMPLES))
        yield live
    finally:
        await stop_server(live, task)


@pytest_asyncio.fixture(loop_scope="module")
async def http(shared: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=shared.url, timeout=30) as client:
        yield client


def sample(*names: str) -> dict[str, Any]:
    return {name: load_policy(name) for name in names}


async def decide(
    client: httpx.AsyncClient, path: str, query: dict[str, Any], **params: str
) -> dict[str, Any]:
    r = await client.post(path, json=query, params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    answer: dict[str, Any] = r.json()
    assert set(answer) == {"policies"}
    return answer["policies"]


async def test_resource_by_ids(http: httpx.AsyncClient, path: str) -> None:
    """A `resource` with a list of ids answers those deployed policies, bodies as deployed."""
    query = {
        **ONAP,
        "requestId": "r-1",
        "action": "configure",
        "resource": {"policy-id": ["onap.scaleout.tca", "onap.restart.tca"]},
    }
    assert await decide(http, path, query) == sample("onap.scaleout.tca", "onap.restart.tca")
    one = {"resource": {"policy-id": "guard.minmax.vdns"}}
    assert await decide(http, path, one) == sample("guard.minmax.vdns")


async def test_resource_by_type_and_prefix(http: httpx.AsyncClient, path: str) -> None:
    """A `resource` by exact type or by `*` prefix answers every deployed policy it matches;
    types are case-sensitive.
    """
    tca = sample(*SAMPLES[:3])
    assert await decide(http, path, {"resource": {"policy-type": TCA_TYPE}}) == tca
    by_prefix = {"resource": {"policy-type": "onap.policies.monitoring.*"}}
    assert await decide(http, path, by_prefix) == tca
    by_id_prefix = {"resource": {"policy-id": "guard.*"}}
    assert await decide(http, path, by_id_prefix) == sample("guard.minmax.vdns")
    assert await decide(http, path, {"resource": {"policy-type": TCA_TYPE.upper()}}) == {}
    either = {"resource": {"policy-id": "guard.minmax.vdns", "policy-type": TCA_TYPE}}
    assert await decide(http, path, either) == sample(*SAMPLES)


async def test_policy_filters_union(http: httpx.AsyncClient, path: str) -> None:
    """(ext) `policy-filters` answers the union of several filters in one query."""
    query = {
        "action": "configure",
        "policy-filters": [
            {"policy-id": "onap.vfirewall.tca"},
            {"policy-type": "onap.policies.controlloop.guard.common.MinMax"},
            {"policy-id": ["onap.vfirewall.tca", "not.deployed"]},
        ],
    }
    assert await decide(http, path, query) == sample("onap.vfirewall.tca", "guard.minmax.vdns")


async def test_abbrev_keeps_type_and_metadata(http: httpx.AsyncClient, path: str) -> None:
    """?abbrev=true answers each policy with only its type and metadata; false in full."""
    query = {"resource": {"policy-id": ["onap.restart.tca", "guard.minmax.vdns"]}}
    abbreviated = await decide(http, path, query, abbrev="true")
    full = sample("onap.restart.tca", "guard.minmax.vdns")
    assert abbreviated == {
        name: {"type": body["type"], "metadata": body["metadata"]} for name, body in full.items()
    }
    assert await decide(http, path, query, abbrev="false") == full


async def test_undeployed_ids_are_absent(
    shared: LiveServer, http: httpx.AsyncClient, path: str
) -> None:
    """Ids never deployed, or undeployed since, are simply absent from the answer."""
    gone = f"gone{path.replace('/', '.')}"
    await push(http, tosca(gone))
    await undeploy(http, gone)
    query = {"resource": {"policy-id": [gone, "onap.restart.tca", "never"]}}
    assert await decide(http, path, query) == sample("onap.restart.tca")
    assert await decide(http, path, {"resource": {"policy-id": "never"}}) == {}


async def test_answers_the_newest_version(http: httpx.AsyncClient, path: str) -> None:
    """After a replacement, the decision answers the new version only."""
    policy_id = f"versioned{path.replace('/', '.')}"
    await push(http, tosca(policy_id, "1.0.0"))
    newer = tosca(policy_id, "1.0.1", properties={"threshold": 9})
    await push(http, newer)
    assert await decide(http, path, {"resource": {"policy-id": policy_id}}) == {policy_id: newer}


async def test_action_other_than_configure(
    shared: LiveServer, http: httpx.AsyncClient, path: str
) -> None:
    """An action other than configure is a 400 "No application for action <x>" that changes
    nothing.
    """
    before = revision(shared)
    r = await http.post(path, json={"action": "guard", "resource": {"policy-id": "x"}})
    assert_onap_error(r, 400, error="No application for action guard")
    assert revision(shared) == before


async def test_action_is_checked_before_the_resource(http: httpx.AsyncClient, path: str) -> None:
    """A guard request as ONAP's drools PDP sends it (a ``guard`` resource this API has no
    field for) is told that no application takes the action, as ONAP's PDP answers; with
    ``configure`` the same resource is a field error.
    """
    guard = {
        "ONAPName": "Policy",
        "ONAPComponent": "drools-pdp",
        "ONAPInstance": "usecase-template",
        "requestId": "unique-request-id-1",
        "action": "guard",
        "resource": {"guard": {"actor": "SO", "operation": "VF Module Create", "vfCount": 1}},
    }
    assert_onap_error(
        await http.post(path, json=guard), 400, error="No application for action guard"
    )
    r = await http.post(path, json={**guard, "action": "configure"})
    assert r.status_code == 400 and "guard" in r.json()["error"]


async def test_request_id_echoed_or_made(http: httpx.AsyncClient, path: str) -> None:
    """X-ONAP-RequestID is echoed when given, and a new one is made on each request without it,
    on successes and errors alike.
    """
    query = {"resource": {"policy-id": "x"}}
    r = await http.post(path, json=query, headers={"X-ONAP-RequestID": "req-42"})
    assert r.headers["X-ONAP-RequestID"] == "req-42"
    first = (await http.post(path, json=query)).headers["X-ONAP-RequestID"]
    second = (await http.post(path, json=query)).headers["X-ONAP-RequestID"]
    assert UUID.match(first) and UUID.match(second) and first != second
    refused = await http.post(
        path, json={"action": "x", **query}, headers={"X-ONAP-RequestID": "e-1"}
    )
    assert (refused.status_code, refused.headers["X-ONAP-RequestID"]) == (400, "e-1")
