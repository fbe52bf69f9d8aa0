"""Every error case of API.md's Errors section outside the router routes: status, ONAP shape,
and nothing changed.

The refused requests run against one server per module, seeded with a subscription, a policy
and a topic; each test compares the whole visible state before and after its request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.api.helpers import (
    PDP_UPDATE,
    POLICIES,
    SUBSCRIPTIONS,
    assert_dmaap_error,
    assert_field_detail,
    assert_onap_error,
    push,
    state,
    subscribe,
    tosca,
)
from tests.conftest import LiveServer, load_policy, make_settings, start_server, stop_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

SUB = f"{SUBSCRIPTIONS}/tca-1"
VALID_SUB = {"subscriber_topic": "t1", "policy-filters": [{"policy-id": "onap.restart.tca"}]}
FILTER = {"policy-id": "onap.restart.tca"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveServer]:
    """A server holding subscription tca-1 on t1, policy onap.restart.tca and topic raw."""
    live, task = await start_server(make_settings(tmp_path_factory.mktemp("errors")))
    try:
        async with httpx.AsyncClient(base_url=live.url) as http:
            await subscribe(http, "tca-1", "t1", [FILTER], ONAPName="DCAE")
            await push(http, load_policy("onap.restart.tca"))
            assert (await http.post("/events/raw", json={"n": 1})).status_code == 200
        yield live
    finally:
        await stop_server(live, task)


@pytest_asyncio.fixture(loop_scope="module")
async def http(shared: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=shared.url, timeout=30) as client:
        yield client


def case(
    name: str, method: str, path: str, status: int, field: str | None = None, **request: Any
) -> Any:
    return pytest.param(method, path, request, status, field, id=name)


def sub(**changes: Any) -> dict[str, Any]:
    """The valid subscription body with some fields changed (None removes one)."""
    body = {**VALID_SUB, **changes}
    return {k: v for k, v in body.items() if v is not None}


ONAP_CASES = [
    # -- bodies that are not a JSON object --------------------------------------------------
    case("sub-malformed-json", "POST", SUB, 400, content=b'{"subscriber_topic": "t1",'),
    case(
        "sub-invalid-utf8",
        "POST",
        SUB,
        400,
        content=b'{"subscriber_topic": "t1", "ONAPName": "\xff\xfe", "policy-filters": []}',
    ),
    case("sub-empty-body", "POST", SUB, 400, content=b""),
    case("sub-json-array", "POST", SUB, 400, "body", json=[VALID_SUB]),
    case("sub-json-string", "POST", SUB, 400, "body", json="tca-1"),
    case("sub-json-null", "POST", SUB, 400, "body", content=b"null"),
    case("sub-json-number", "POST", SUB, 400, "body", content=b"42"),
    # -- wrong types --------------------------------------------------------------------------
    case("sub-topic-int", "POST", SUB, 400, "subscriber_topic", json=sub(subscriber_topic=5)),
    case(
        "sub-filters-object",
        "POST",
        SUB,
        400,
        "policy-filters",
        json=sub(**{"policy-filters": FILTER}),
    ),
    case(
        "sub-filter-string",
        "POST",
        SUB,
        400,
        "policy-filters[0]",
        json=sub(**{"policy-filters": ["x"]}),
    ),
    case(
        "sub-filter-id-int",
        "POST",
        SUB,
        400,
        "policy-filters[0].policy-id",
        json=sub(**{"policy-filters": [{"policy-id": 5}]}),
    ),
    case(
        "sub-filter-id-empty-list",
        "POST",
        SUB,
        400,
        "policy-filters[0].policy-id",
        json=sub(**{"policy-filters": [{"policy-id": []}]}),
    ),
    case(
        "sub-filter-type-list-of-int",
        "POST",
        SUB,
        400,
        "policy-filters[1].policy-type",
        json=sub(**{"policy-filters": [FILTER, {"policy-type": [1]}]}),
    ),
    case(
        "sub-return-policies-string",
        "POST",
        SUB,
        400,
        "return-policies",
        json=sub(**{"return-policies": "yes"}),
    ),
    case(
        "sub-return-policies-int",
        "POST",
        SUB,
        400,
        "return-policies",
        json=sub(**{"return-policies": 1}),
    ),
    case("sub-onapname-int", "POST", SUB, 400, "ONAPName", json=sub(ONAPName=1)),
    case("sub-action-int", "POST", SUB, 400, "action", json=sub(action=1)),
    # -- missing and unknown fields -----------------------------------------------------------
    case(
        "sub-missing-topic", "POST", SUB, 400, "subscriber_topic", json=sub(subscriber_topic=None)
    ),
    case(
        "sub-missing-filters",
        "POST",
        SUB,
        400,
        "policy-filters",
        json=sub(**{"policy-filters": None}),
    ),
    case("sub-unknown-field", "POST", SUB, 400, "colour", json=sub(colour="red")),
    case(
        "sub-empty-filters", "POST", SUB, 400, "policy-filters", json=sub(**{"policy-filters": []})
    ),
    case(
        "sub-filter-no-key",
        "POST",
        SUB,
        400,
        "policy-filters[0]",
        json=sub(**{"policy-filters": [{}]}),
    ),
    case(
        "sub-filter-unknown-key",
        "POST",
        SUB,
        400,
        "policy-filters[0].policy-name",
        json=sub(**{"policy-filters": [{"policy-id": "x", "policy-name": "y"}]}),
    ),
    case("sub-action-not-configure", "POST", SUB, 400, "action", json=sub(action="naming")),
    # -- bad identifiers ----------------------------------------------------------------------
    case(
        "sub-topic-space",
        "POST",
        SUB,
        400,
        "subscriber_topic",
        json=sub(subscriber_topic="bad topic"),
    ),
    case("sub-topic-empty", "POST", SUB, 400, "subscriber_topic", json=sub(subscriber_topic="")),
    case("sub-topic-slash", "POST", SUB, 400, "subscriber_topic", json=sub(subscriber_topic="a/b")),
    case("sub-topic-colon", "POST", SUB, 400, "subscriber_topic", json=sub(subscriber_topic="a:b")),
    case(
        "sub-topic-256", "POST", SUB, 400, "subscriber_topic", json=sub(subscriber_topic="t" * 256)
    ),
    case(
        "sub-topic-unicode", "POST", SUB, 400, "subscriber_topic", json=sub(subscriber_topic="tüv")
    ),
    case("sub-id-space", "POST", f"{SUBSCRIPTIONS}/tca%201", 400, "subscriber_id", json=VALID_SUB),
    case(
        "sub-id-256", "POST", f"{SUBSCRIPTIONS}/{'a' * 256}", 400, "subscriber_id", json=VALID_SUB
    ),
    case(
        "sub-id-unicode", "POST", f"{SUBSCRIPTIONS}/t%C3%BCv", 400, "subscriber_id", json=VALID_SUB
    ),
    case(
        "sub-id-invalid-utf8", "POST", f"{SUBSCRIPTIONS}/%FF", 400, "subscriber_id", json=VALID_SUB
    ),
    case("sub-id-nul", "POST", f"{SUBSCRIPTIONS}/a%00b", 400, json=VALID_SUB),  # before routing
    case("sub-get-id-space", "GET", f"{SUBSCRIPTIONS}/tca%201", 400, "subscriber_id"),
    case("sub-delete-id-256", "DELETE", f"{SUBSCRIPTIONS}/{'a' * 256}", 400, "subscriber_id"),
    case("sub-list-bad-topic", "GET", f"{SUBSCRIPTIONS}?topic=bad%20topic", 400, "topic"),
    case("sub-list-empty-topic", "GET", f"{SUBSCRIPTIONS}?topic=", 400, "topic"),
    case("sub-list-stale-negative", "GET", f"{SUBSCRIPTIONS}?stale=-1", 400, "stale"),
    case("sub-list-stale-word", "GET", f"{SUBSCRIPTIONS}?stale=old", 400, "stale"),
    case("sub-list-stale-nan", "GET", f"{SUBSCRIPTIONS}?stale=nan", 400, "stale"),
    # -- unknown resources, content types -----------------------------------------------------
    case("sub-get-unknown", "GET", f"{SUBSCRIPTIONS}/nobody", 404),
    case("sub-delete-unknown", "DELETE", f"{SUBSCRIPTIONS}/nobody", 404),
    case(
        "sub-text-plain",
        "POST",
        SUB,
        415,
        content=b'{"subscriber_topic": "t2", "policy-filters": [{"policy-id": "x"}]}',
        headers={"content-type": "text/plain"},
    ),
    case(
        "sub-form",
        "POST",
        SUB,
        415,
        content=b"subscriber_topic=t2",
        headers={"content-type": "application/x-www-form-urlencoded"},
    ),
    # -- PAP: POST /pap/v1/policies -----------------------------------------------------------
    case("pap-malformed-json", "POST", POLICIES, 400, content=b'{"policies": [}'),
    case(
        "pap-invalid-utf8", "POST", POLICIES, 400, content=b'{"policies": [{"type": "\xc3\x28"}]}'
    ),
    case("pap-json-array", "POST", POLICIES, 400, "body", json=[tosca("p")]),
    case("pap-json-string", "POST", POLICIES, 400, "body", json="p"),
    case("pap-missing-policies", "POST", POLICIES, 400, "policies", json={}),
    case("pap-empty-policies", "POST", POLICIES, 400, "policies", json={"policies": []}),
    case("pap-policies-object", "POST", POLICIES, 400, "policies", json={"policies": tosca("p")}),
    case(
        "pap-unknown-field",
        "POST",
        POLICIES,
        400,
        "colour",
        json={"policies": [tosca("p")], "colour": 1},
    ),
    case(
        "pap-missing-type",
        "POST",
        POLICIES,
        400,
        "policies[0].type",
        json={"policies": [{k: v for k, v in tosca("p").items() if k != "type"}]},
    ),
    case(
        "pap-type-int",
        "POST",
        POLICIES,
        400,
        "policies[0].type",
        json={"policies": [tosca("p", policy_type=7)]},
    ),
    case(
        "pap-no-identity",
        "POST",
        POLICIES,
        400,
        "policies[0]",
        json={"policies": [{"type": "x", "version": "1"}]},
    ),
    case(
        "pap-no-version",
        "POST",
        POLICIES,
        400,
        "policies[0]",
        json={"policies": [{"type": "x", "name": "p"}]},
    ),
    case(
        "pap-bad-name",
        "POST",
        POLICIES,
        400,
        "policies[0].name",
        json={"policies": [{"type": "x", "name": "bad id", "version": "1"}]},
    ),
    case(
        "pap-bad-metadata-id",
        "POST",
        POLICIES,
        400,
        "policies[0].metadata.policy-id",
        json={"policies": [{"type": "x", "version": "1", "metadata": {"policy-id": "a/b"}}]},
    ),
    case(
        "pap-version-bool",
        "POST",
        POLICIES,
        400,
        "policies[0].version",
        json={"policies": [tosca("p", version=True)]},
    ),
    case(
        "pap-properties-list",
        "POST",
        POLICIES,
        400,
        "policies[0].properties",
        json={"policies": [{**tosca("p"), "properties": []}]},
    ),
    case(
        "pap-duplicate-ids",
        "POST",
        POLICIES,
        400,
        "policies",
        json={"policies": [tosca("p", "1"), tosca("p", "2")]},
    ),
    case(
        "pap-one-invalid-among-valid",
        "POST",
        POLICIES,
        400,
        "policies[1].type",
        json={
            "policies": [
                load_policy("onap.scaleout.tca"),
                {**tosca("p"), "type": ""},
                load_policy("guard.minmax.vdns"),
            ]
        },
    ),
    case(
        "pap-text-plain",
        "POST",
        POLICIES,
        415,
        content=b'{"policies": []}',
        headers={"content-type": "text/plain"},
    ),
    case("pap-delete-unknown", "DELETE", f"{POLICIES}/onap.scaleout.tca", 404),
    case("pap-delete-bad-id", "DELETE", f"{POLICIES}/bad%20id", 400, "policy_id"),
    case("pap-get-unknown", "GET", f"{POLICIES}/onap.scaleout.tca", 404),
    case("pap-get-bad-id", "GET", f"{POLICIES}/{'p' * 256}", 400, "policy_id"),
    # -- PAP: PDP_UPDATE ------------------------------------------------------------------------
    case("pdp-malformed-json", "POST", PDP_UPDATE, 400, content=b"{'messageName': 'PDP_UPDATE'}"),
    case("pdp-json-array", "POST", PDP_UPDATE, 400, "body", json=[]),
    case(
        "pdp-delta-contradicts-complete-set",
        "POST",
        PDP_UPDATE,
        400,
        json={
            "policies": [],
            "policiesToBeDeployed": [{"type": "t", "name": "p", "version": "1.0.0"}],
        },
    ),
    case(
        "pdp-wrong-message",
        "POST",
        PDP_UPDATE,
        400,
        "messageName",
        json={"messageName": "PDP_HEALTH_CHECK", "policies": []},
    ),
    case(
        "pdp-state-change-no-state",
        "POST",
        PDP_UPDATE,
        400,
        "state",
        json={"messageName": "PDP_STATE_CHANGE", "policies": []},
    ),
    case(
        "pdp-state-change-unsupported",
        "POST",
        PDP_UPDATE,
        400,
        json={"messageName": "PDP_STATE_CHANGE", "state": "SAFE"},
    ),
    case(
        "pdp-request-id-int",
        "POST",
        PDP_UPDATE,
        400,
        "requestId",
        json={"requestId": 5, "policies": []},
    ),
    case(
        "pdp-undeploy-without-name",
        "POST",
        PDP_UPDATE,
        400,
        "policiesToBeUndeployed[0].name",
        json={"policiesToBeUndeployed": [{"version": "1.0.0"}]},
    ),
    case(
        "pdp-invalid-deploy-with-valid-undeploy",
        "POST",
        PDP_UPDATE,
        400,
        "policiesToBeDeployed[0].type",
        json={
            "policiesToBeDeployed": [{**tosca("p"), "type": 3}],
            "policiesToBeUndeployed": [{"name": "onap.restart.tca", "version": "1.0.0"}],
        },
    ),
    case(
        "pdp-complete-set-with-an-invalid-policy",
        "POST",
        PDP_UPDATE,
        400,
        "policies[1]",
        json={"policies": [load_policy("onap.scaleout.tca"), {"type": "x"}]},
    ),
    # -- decision -----------------------------------------------------------------------------
    case(
        "decision-both-selectors",
        "POST",
        "/decision/v1",
        400,
        "body",
        json={"resource": FILTER, "policy-filters": [FILTER]},
    ),
    case(
        "decision-no-selector",
        "POST",
        "/policy/pdpx/v1/decision",
        400,
        "body",
        json={"action": "configure"},
    ),
    case("decision-empty-resource", "POST", "/decision/v1", 400, "resource", json={"resource": {}}),
    case(
        "decision-resource-unknown-key",
        "POST",
        "/policy/pdpx/v1/decision",
        400,
        "resource.policy-name",
        json={"resource": {"policy-id": "x", "policy-name": "x"}},
    ),
    case(
        "decision-resource-list",
        "POST",
        "/decision/v1",
        400,
        "resource",
        json={"resource": [FILTER]},
    ),
    case(
        "decision-empty-filters",
        "POST",
        "/decision/v1",
        400,
        "policy-filters",
        json={"policy-filters": []},
    ),
    case(
        "decision-filter-no-key",
        "POST",
        "/decision/v1",
        400,
        "policy-filters[0]",
        json={"policy-filters": [{}]},
    ),
    case(
        "decision-filter-unknown-key",
        "POST",
        "/decision/v1",
        400,
        "policy-filters[0].x",
        json={"policy-filters": [{"x": "y"}]},
    ),
    case(
        "decision-unknown-field",
        "POST",
        "/decision/v1",
        400,
        "colour",
        json={"resource": FILTER, "colour": 1},
    ),
    case(
        "decision-onapname-int",
        "POST",
        "/decision/v1",
        400,
        "ONAPName",
        json={"resource": FILTER, "ONAPName": 1},
    ),
    case(
        "decision-abbrev-word",
        "POST",
        "/decision/v1?abbrev=maybe",
        400,
        "abbrev",
        json={"resource": FILTER},
    ),
    case("decision-json-array", "POST", "/decision/v1", 400, "body", json=[FILTER]),
    case(
        "decision-malformed-json", "POST", "/policy/pdpx/v1/decision", 400, content=b'{"resource": '
    ),
    case(
        "decision-text-plain",
        "POST",
        "/decision/v1",
        415,
        content=b'{"resource": {"policy-id": "x"}}',
        headers={"content-type": "text/plain"},
    ),
    # -- routes and methods -------------------------------------------------------------------
    case("unknown-route", "GET", "/no/such/route", 404),
    case("unknown-route-post", "POST", "/pap/v2/policies", 404, json={"policies": []}),
    case("method-put-policies", "PUT", POLICIES, 405, json={"policies": [tosca("p")]}),
    case("method-get-decision", "GET", "/decision/v1", 405),
    case("method-patch-subscription", "PATCH", SUB, 405, json=VALID_SUB),
    case("method-post-healthcheck", "POST", "/healthcheck", 405, json={}),
    case("method-delete-pdp-update", "DELETE", PDP_UPDATE, 405),
]

# Query parameters and a body that is not an object have no field list to point into.
UNDETAILED = {"abbrev", "stale", "body"}


@pytest.mark.parametrize(("method", "path", "request_args", "status", "field"), ONAP_CASES)
async def test_refused_in_onap_shape(
    shared: LiveServer,
    http: httpx.AsyncClient,
    method: str,
    path: str,
    request_args: dict[str, Any],
    status: int,
    field: str | None,
) -> None:
    """A refused request answers its status in the ONAP shape, names the bad field in `error`
    and `details`, and changes nothing.
    """
    before = await state(http, shared)
    r = await http.request(method, path, **request_args)
    body = assert_onap_error(r, status, field)
    if field is not None and (body["details"] or field not in UNDETAILED):
        assert_field_detail(body, field)
    assert await state(http, shared) == before


@pytest.mark.parametrize("path", ["/policy/pdpx/v1/decision", "/decision/v1"])
async def test_decision_action_other_than_configure(
    shared: LiveServer, http: httpx.AsyncClient, path: str
) -> None:
    """A decision for an action other than configure is a 400 "No application for action x"."""
    r = await http.post(path, json={"action": "naming", "resource": FILTER})
    assert_onap_error(r, 400, error="No application for action naming")


async def test_no_route_names_the_path(http: httpx.AsyncClient) -> None:
    """An unknown route's 404 and a wrong method's 405 say what was asked."""
    body = assert_onap_error(await http.get("/no/such/route"), 404)
    assert "/no/such/route" in body["error"]
    r = await http.put(POLICIES, json={})
    body = assert_onap_error(r, 405)
    assert "PUT" in body["error"]
    assert "POST" in r.headers["allow"]


async def test_method_not_allowed_lists_every_allowed_method(http: httpx.AsyncClient) -> None:
    """A 405 carries an Allow header with every method the path supports."""
    r = await http.put(POLICIES, json={})
    assert r.status_code == 405
    assert set(r.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "POST"}


async def test_failed_requests_left_the_seed_intact(
    shared: LiveServer, http: httpx.AsyncClient
) -> None:
    """After all the refused requests, the seeded subscription, policy and topic are as made."""
    seen = await state(http, shared)
    assert [p["policy-id"] for p in seen["policies"]["policies"]] == ["onap.restart.tca"]
    assert seen["bodies"]["onap.restart.tca"] == load_policy("onap.restart.tca")
    [record] = seen["subscriptions"]["subscriptions"]
    assert (record["subscriber_id"], record["subscriber_topic"], record["ONAPName"]) == (
        "tca-1",
        "t1",
        "DCAE",
    )
    assert seen["topics"]["t1"]["messages"] == 2
    assert seen["topics"]["t1"]["consumer_groups"] == []
    assert seen["topics"]["raw"]["messages"] == 1
    assert seen["revision"] == 2


# -- body size --------------------------------------------------------------------------------


async def test_body_over_the_limit_is_413(tmp_path: Path) -> None:
    """A body over max_body_bytes is a 413 in the route's shape, declared or streamed, and a
    body of exactly the limit is accepted.
    """
    live, task = await start_server(make_settings(tmp_path, max_body_bytes=1024))
    try:
        async with httpx.AsyncClient(base_url=live.url) as client:
            before = await state(client, live)
            padded = b'{"subscriber_topic": "t1", "policy-filters": [{"policy-id": "p"}]}'
            over = padded[:-1] + b" " * (1025 - len(padded)) + b"}"
            assert len(over) == 1025
            body = assert_onap_error(await client.post(SUB, content=over), 413)
            assert "1024" in body["error"]

            async def chunks() -> AsyncIterator[bytes]:
                yield over[:600]
                yield over[600:]

            assert_onap_error(await client.post(SUB, content=chunks()), 413)
            big_policy = {"policies": [tosca("p", properties={"blob": "x" * 2000})]}
            assert_onap_error(await client.post(POLICIES, json=big_policy), 413)
            assert_onap_error(await client.post(PDP_UPDATE, json=big_policy), 413)
            r = await client.post("/decision/v1", json={"resource": {"policy-id": ["p"] * 400}})
            assert_onap_error(r, 413)
            assert_dmaap_error(await client.post("/events/raw", json={"blob": "x" * 2000}), 413)
            assert await state(client, live) == before

            exact = over[:-2] + b"}"
            assert len(exact) == 1024
            assert (await client.post(SUB, content=exact)).status_code == 201
    finally:
        await stop_server(live, task)
