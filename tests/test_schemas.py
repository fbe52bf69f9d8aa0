"""The JSON Schemas of schemas/v1: well-formed, true to the server's real answers, and in
agreement with the pydantic request models on every document.

Three request rules cannot be said in JSON Schema, and the drift tests allow exactly these:
a policy-id repeated in one list (``uniqueItems`` compares whole items), a ``name`` and a
``metadata.policy-id`` that differ (a schema cannot compare two values), and a version given
as ``1.0`` (JSON Schema counts it as an integer; the server does not). The generators never
draw integral floats; a repeated id and a contradicted name are the refusals the schema may
miss.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ValidationError

import policy_pubsub
from policy_pubsub import constants, schemas
from policy_pubsub.config import Settings
from policy_pubsub.models import (
    NAME_MISMATCH,
    DeadLetterRetry,
    DecisionRequest,
    PdpUpdate,
    PolicyFilter,
    PolicyPush,
    SubscriptionRequest,
    ToscaPolicy,
)
from policy_pubsub.onap.messages import PdpStateChange
from tests import strategies as shared
from tests.conftest import POLICIES, load_policy, make_settings, wait_for

MAX_BODY = 64 * 1024
ERROR_CODES = {
    400: "BAD_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The conftest settings with a small body limit, so a 413 is cheap to provoke."""
    return make_settings(tmp_path, max_body_bytes=MAX_BODY)


def assert_valid(name: str, instance: Any) -> None:
    """Fail with every violation of ``schemas/v1/<name>.json``, each with its location."""
    errors = list(schemas.validator(name).iter_errors(instance))
    problems = [f"at {list(e.absolute_path)}: {e.message[:300]}" for e in errors]
    assert not problems, f"{name}.json: " + "; ".join(problems)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


# --- (a) the schemas themselves ----------------------------------------------------------------


@pytest.mark.parametrize("name", schemas.names())
def test_schema_is_valid_draft_2020_12(name: str) -> None:
    """Every schema file is a valid draft 2020-12 schema with its $id, a title and a description."""
    schema = schemas.load_schema(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"{schemas.BASE_URI}{name}.json"
    assert isinstance(schema.get("title"), str) and schema["title"]
    assert isinstance(schema.get("description"), str) and schema["description"]


@pytest.mark.parametrize("name", schemas.names())
def test_every_ref_resolves_offline(name: str) -> None:
    """Every $ref of a schema resolves through the offline registry of schemas/v1."""
    schema = schemas.load_schema(name)
    resolver = schemas.registry().resolver(base_uri=schema["$id"])
    for ref in _refs(schema):
        assert resolver.lookup(ref).contents is not None, ref


@pytest.mark.parametrize(
    "name", [n for n in schemas.names() if "examples" in schemas.load_schema(n)]
)
def test_schema_examples_validate(name: str) -> None:
    """The examples a schema gives are valid against it."""
    for example in schemas.load_schema(name)["examples"]:
        assert_valid(name, example)


@pytest.mark.parametrize(
    ("name", "pointer", "pattern"),
    [
        ("tosca-policy", "policyId", constants.POLICY_ID_PATTERN),
        ("subscription-request", "topic", constants.TOPIC_PATTERN),
        ("subscription-record", "subscriberId", constants.SUBSCRIBER_ID_PATTERN),
    ],
)
def test_identifier_patterns_are_the_servers(name: str, pointer: str, pattern: str) -> None:
    """The identifier patterns are those of policy_pubsub.constants, guarded against a final
    newline that Python's `re` would let `$` accept.
    """
    assert schemas.load_schema(name)["$defs"][pointer]["pattern"] == pattern + "(?!\\n)"
    reference = {"$ref": f"{schemas.BASE_URI}{name}.json#/$defs/{pointer}"}
    identifier = schemas.validator(name).evolve(schema=reference)
    assert identifier.is_valid("abc")
    assert not identifier.is_valid("abc\n")


def test_schemas_are_found_in_the_source_tree() -> None:
    """From a source checkout the schemas are <repo>/schemas/v1."""
    source = Path(policy_pubsub.__file__).resolve().parents[1]
    assert schemas.schemas_dir() == source / "schemas" / "v1"


def test_schemas_are_found_in_a_wheel(tmp_path: Path) -> None:
    """In an installed wheel the schemas are policy_pubsub/_schemas/v1, even when some other
    distribution installed a top-level `schemas` directory next to the package.
    """
    site = tmp_path.resolve() / "site-packages"
    package = site / "policy_pubsub"
    shutil.copytree(schemas.schemas_dir(), package / "_schemas" / "v1")
    (site / "schemas" / "v1").mkdir(parents=True)
    shutil.copy(schemas.__file__, package / "schemas.py")
    spec = importlib.util.spec_from_file_location("wheel_schemas", package / "schemas.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.schemas_dir() == package / "_schemas" / "v1"
    assert module.names() == schemas.names()
    shutil.rmtree(package / "_schemas")
    shutil.rmtree(site / "schemas")
    with pytest.raises(FileNotFoundError):
        module.schemas_dir()


def test_sample_files_validate() -> None:
    """Every file in examples/policies is valid against its schema, as the models also find."""
    files = sorted(POLICIES.glob("*.json"))
    assert files
    for path in files:
        document = json.loads(path.read_text())
        if path.name.startswith("pdp-update"):
            assert_valid("pdp-update", document)
            PdpUpdate.model_validate(document)
        else:
            assert_valid("tosca-policy", document)
            ToscaPolicy.model_validate(document)


# --- (b) the server's real answers -------------------------------------------------------------

SUBSCRIPTION = {
    "subscriber_topic": "policies_DCAE_tca_tca-1",
    "action": "configure",
    "ONAPName": "DCAE",
    "ONAPComponent": "tca",
    "ONAPInstance": "tca-1",
    "policy-filters": [
        {"policy-id": ["onap.scaleout.tca", "onap.restart.tca"]},
        {"policy-type": "onap.policies.controlloop.*"},
    ],
}


async def test_subscription_answers_validate(client: httpx.AsyncClient) -> None:
    """Subscribe (insert and update, with and without policies), GET and list answer records
    valid against subscription-record.json and subscription-list.json.
    """
    r = await client.post("/pap/v1/policies", json={"policies": [load_policy("onap.restart.tca")]})
    assert r.status_code == 200, r.text
    assert_valid("policy-change-result", r.json())

    r = await client.post("/decision/v1/subscription/tca-1", json=SUBSCRIPTION)
    assert r.status_code == 201, r.text
    assert_valid("subscription-record", r.json())
    assert list(r.json()["policies"]) == ["onap.restart.tca"]

    update = {**SUBSCRIPTION, "return-policies": False, "ONAPName": None}
    r = await client.post("/decision/v1/subscription/tca-1", json=update)
    assert r.status_code == 200, r.text
    assert_valid("subscription-record", r.json())
    assert "policies" not in r.json()

    minimal = {"subscriber_topic": "t2", "policy-filters": [{"policy-type": "x"}]}
    r = await client.post("/decision/v1/subscription/other:2", json=minimal)
    assert r.status_code == 201, r.text
    assert_valid("subscription-record", r.json())
    assert r.json()["policies"] == {}

    r = await client.get("/decision/v1/subscription/tca-1")
    assert r.status_code == 200, r.text
    assert_valid("subscription-record", r.json())
    assert r.json()["status"]["last_consumed_at"] is None

    await client.get("/events/t2/g/c", params={"timeout": 1000})
    r = await client.get("/decision/v1/subscription/other:2")
    assert_valid("subscription-record", r.json())
    assert r.json()["status"]["last_consumed_at"] is not None

    for params in ({}, {"topic": "t2"}, {"stale": "0"}):
        r = await client.get("/decision/v1/subscription", params=params)
        assert r.status_code == 200, r.text
        assert_valid("subscription-list", r.json())
    r = await client.get("/decision/v1/subscription")
    assert [s["subscriber_id"] for s in r.json()["subscriptions"]] == ["other:2", "tca-1"]


async def test_pap_answers_validate(client: httpx.AsyncClient) -> None:
    """Push, both PDP_UPDATE generations, the policy list, one policy and an undeploy answer
    bodies valid against their schemas.
    """
    r = await client.post(
        "/pap/v1/policies",
        json={"policies": [load_policy("onap.restart.tca"), load_policy("onap.vfirewall.tca")]},
    )
    assert r.status_code == 200, r.text
    assert_valid("policy-change-result", r.json())
    assert len(r.json()["deployed"]) == 2

    r = await client.post("/pap/v1/pdp-update", json=load_policy("pdp-update.delta"))
    assert r.status_code == 200, r.text
    assert_valid("pdp-status", r.json())
    assert r.json()["pdpGroup"] == "defaultGroup"
    assert r.json()["response"]["responseTo"] == "3534e54f-4432-4c68-81c8-a6af07e59fb2"

    el_alto = {"messageName": "PDP_UPDATE", "policies": [load_policy("onap.scaleout.tca")]}
    r = await client.post("/pap/v1/pdp-update", json=el_alto)
    assert r.status_code == 200, r.text
    assert_valid("pdp-status", r.json())
    assert r.json()["response"]["responseTo"] is None
    assert [p["name"] for p in r.json()["policies"]] == ["onap.scaleout.tca"]

    r = await client.post("/pap/v1/pdp-update", json=el_alto)
    assert_valid("pdp-status", r.json())  # no change
    assert r.json()["notified"] == 0

    integer_version = {"type": "t.x", "name": "int.version", "version": 3}
    r = await client.post("/pap/v1/policies", json={"policies": [integer_version]})
    assert_valid("policy-change-result", r.json())
    assert r.json()["deployed"] == [{"policy-id": "int.version", "policy-version": "3"}]

    r = await client.get("/pap/v1/policies")
    assert r.status_code == 200, r.text
    assert_valid("policy-list", r.json())
    assert len(r.json()["policies"]) == 2

    for policy_id in ("onap.scaleout.tca", "int.version"):
        r = await client.get(f"/pap/v1/policies/{policy_id}")
        assert r.status_code == 200, r.text
        assert_valid("tosca-policy", r.json())

    r = await client.delete("/pap/v1/policies/int.version")
    assert r.status_code == 200, r.text
    assert_valid("policy-change-result", r.json())
    assert r.json()["undeployed"] == [{"policy-id": "int.version", "policy-version": "3"}]


async def test_decision_answers_validate(client: httpx.AsyncClient) -> None:
    """Decisions, full and abbreviated, by `resource` and by `policy-filters`, answer bodies
    valid against decision-response.json.
    """
    nameless = {"type": "t.y", "version": "1", "metadata": {"policy-id": "meta.only"}}
    policies = [load_policy("onap.restart.tca"), load_policy("guard.minmax.vdns"), nameless]
    await client.post("/pap/v1/policies", json={"policies": policies})
    bodies: list[dict[str, Any]] = [
        {"resource": {"policy-id": ["onap.restart.tca", "not.deployed"]}},
        {"ONAPName": "DCAE", "requestId": "r-1", "resource": {"policy-type": "t.*"}},
        {"policy-filters": [{"policy-id": "guard.*"}, {"policy-type": "onap.policies.*"}]},
    ]
    for path in ("/policy/pdpx/v1/decision", "/decision/v1"):
        for body in bodies:
            for params in ({}, {"abbrev": "true"}):
                r = await client.post(path, json=body, params=params)
                assert r.status_code == 200, r.text
                assert_valid("decision-response", r.json())
                assert r.json()["policies"]
    r = await client.post("/decision/v1", json=bodies[0], params={"abbrev": "true"})
    assert set(r.json()["policies"]["onap.restart.tca"]) == {"type", "metadata"}


async def test_snapshot_messages_validate(client: httpx.AsyncClient) -> None:
    """Every message a subscriber's topic carries (subscribe and update events) is valid
    against snapshot-message.json.
    """
    await client.post("/decision/v1/subscription/tca-1", json=SUBSCRIPTION)
    minimal = {"subscriber_topic": SUBSCRIPTION["subscriber_topic"]}
    await client.post(
        "/decision/v1/subscription/guard-1",
        json={
            **minimal,
            "policy-filters": [{"policy-id": "guard.minmax.vdns", "policy-type": None}],
        },
    )
    await client.post("/pap/v1/policies", json={"policies": [load_policy("onap.restart.tca")]})
    await client.post("/pap/v1/pdp-update", json=load_policy("pdp-update.delta"))
    await client.post("/pap/v1/pdp-update", json={"policies": [load_policy("guard.minmax.vdns")]})
    messages: list[str] = []

    async def polled_all() -> bool:
        r = await client.get(
            f"/events/{SUBSCRIPTION['subscriber_topic']}/g/c", params={"timeout": 1000}
        )
        assert r.status_code == 200, r.text
        messages.extend(r.json())
        return len(messages) >= 6

    await wait_for(polled_all)
    events = set()
    for text in messages:
        assert isinstance(text, str)
        snapshot = json.loads(text)
        assert_valid("snapshot-message", snapshot)
        events.add(snapshot["event"])
    assert events == {"subscribe", "update"}


async def test_router_and_health_answers_validate(client: httpx.AsyncClient) -> None:
    """Publish, /topics, /topics/{topic} and /healthcheck answer bodies valid against their
    schemas.
    """
    r = await client.post("/events/plain", json={"a": 1})
    assert r.status_code == 200, r.text
    assert_valid("mr-publish-response", r.json())
    r = await client.post("/events/plain", json=[{"b": 2}, {"c": 3}])
    assert_valid("mr-publish-response", r.json())
    assert r.json()["count"] == 2
    r = await client.get("/events/plain/g/c", params={"timeout": 1000, "limit": 1})
    assert len(r.json()) == 1

    r = await client.get("/topics")
    assert r.status_code == 200, r.text
    assert_valid("topic-list", r.json())
    assert r.json()["topics"] == ["plain"]
    r = await client.get("/topics/plain")
    assert r.status_code == 200, r.text
    assert_valid("topic-details", r.json())
    assert r.json()["consumer_groups"][0]["lag"] == 2

    await client.post("/events/fresh", json={"x": 0})
    r = await client.get("/topics/fresh")
    assert_valid("topic-details", r.json())
    assert r.json()["consumer_groups"] == []

    r = await client.get("/healthcheck")
    assert r.status_code == 200, r.text
    assert_valid("healthcheck", r.json())


JSON_HEADERS = {"content-type": "application/json"}
TOO_LARGE = b'{"policies": [], "pad": "' + b"x" * MAX_BODY + b'"}'
ERRORS: list[tuple[str, str, dict[str, Any], int]] = [
    ("POST", "/decision/v1", {"content": b"{", "headers": JSON_HEADERS}, 400),
    ("POST", "/decision/v1", {"json": [1]}, 400),
    ("POST", "/decision/v1", {"json": {"action": "x", "resource": {"policy-id": "a"}}}, 400),
    ("POST", "/decision/v1", {"json": {"resource": {}}}, 400),
    ("POST", "/decision/v1?abbrev=maybe", {"json": {"resource": {"policy-id": "a"}}}, 400),
    ("POST", "/decision/v1/subscription/s1", {"json": {"subscriber_topic": "bad topic"}}, 400),
    ("POST", "/decision/v1/subscription/bad%20id", {"json": SUBSCRIPTION}, 400),
    ("GET", "/decision/v1/subscription?stale=-1", {}, 400),
    ("GET", "/decision/v1/subscription?topic=a%2Fb", {}, 400),
    ("POST", "/pap/v1/policies", {"json": {"policies": [{"type": "t"}]}}, 400),
    ("POST", "/pap/v1/pdp-update", {"json": {"messageName": "PDP_STATE_CHANGE"}}, 400),
    ("GET", "/decision/v1/subscription/unknown", {}, 404),
    ("DELETE", "/decision/v1/subscription/unknown", {}, 404),
    ("GET", "/pap/v1/policies/unknown", {}, 404),
    ("DELETE", "/pap/v1/policies/unknown", {}, 404),
    ("GET", "/no/such/route", {}, 404),
    ("PUT", "/pap/v1/policies", {"json": {}}, 405),
    ("PATCH", "/decision/v1", {"json": {}}, 405),
    ("POST", "/pap/v1/policies", {"content": TOO_LARGE, "headers": JSON_HEADERS}, 413),
    (
        "POST",
        "/pap/v1/pdp-update",
        {"content": b"{}", "headers": {"content-type": "text/xml"}},
        415,
    ),
    ("POST", "/events/t", {"content": b"{", "headers": JSON_HEADERS}, 400),
    ("POST", "/events/t", {"json": []}, 400),
    ("POST", "/events/t", {"json": [1, 2]}, 400),
    ("GET", "/events/t/g/c?timeout=abc", {}, 400),
    ("GET", "/events/t/g/c?limit=0", {}, 400),
    ("GET", "/topics/bad%20topic", {}, 400),
    ("GET", "/events/unknown/g/c?timeout=0", {}, 404),
    ("GET", "/topics/unknown", {}, 404),
    ("PUT", "/events/t", {"json": {}}, 405),
    ("POST", "/events/t", {"content": TOO_LARGE, "headers": JSON_HEADERS}, 413),
    ("POST", "/events/t", {"content": b"{}", "headers": {"content-type": "text/plain"}}, 415),
]


async def test_error_answers_validate(client: httpx.AsyncClient) -> None:
    """Error answers are valid against error.json (ONAP shape, `code` matching the status)
    outside /events and /topics, and against mr-error.json (DMaaP shape) on them.
    """
    await client.post("/events/t", json={"seed": True})  # so /events/t/... is a known topic
    for method, url, kwargs, status in ERRORS:
        r = await client.request(method, url, **kwargs)
        where = f"{method} {url}"
        assert r.status_code == status, f"{where}: {r.status_code} {r.text}"
        if url.startswith(("/events", "/topics")):
            assert_valid("mr-error", r.json())
            assert r.json()["status"] == status, where
        else:
            assert_valid("error", r.json())
            assert r.json()["code"] == ERROR_CODES[status], where


# --- (c) request schemas and pydantic models agree ---------------------------------------------

#: Values a mutation puts anywhere: every type, empty and boundary-length strings, a final
#: newline, near-miss constants, and small valid fragments.
TRICKY: list[Any] = [
    None, True, False, 0, 1, -1, 2**70, 1.5, -0.25,
    "", " ", "a", "a\n", "a b", "a/b", "é", "*", "configure", "decide", "PDP_UPDATE", "PDP_STATUS",
    "p" * 255, "p" * 256, "x" * 1024, "x" * 1025,
    [], [""], ["a"], ["a", 1], [None], ["x" * 1025], {}, {"policy-id": "a"}, {"policy-type": None},
    {"name": "n"}, {"policy-id": "a", "policy-version": 2},
    {"type": "t", "name": "p", "version": 1}, {"name": "p", "version": None},
]  # fmt: skip
KEYS = [
    "policy-id", "policy-type", "policy_id", "policyId", "name", "version", "type",
    "type_version", "metadata", "policy-version", "properties", "subscriber_topic", "action",
    "ONAPName", "onap_name", "policy-filters", "resource", "return-policies", "requestId",
    "context", "messageName", "message_name", "policies", "policiesToBeDeployed",
    "policiesToBeUndeployed", "pdpGroup", "extra",
]  # fmt: skip
VALUES = st.one_of(st.sampled_from(TRICKY), shared.json_values()).map(copy.deepcopy)


def _containers(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    children = node.items() if isinstance(node, dict) else enumerate(node)
    for key, child in children:
        if isinstance(child, (dict, list)):
            yield from _containers(child, (*path, key))


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A document from ``base`` after 0-3 mutations anywhere in it: a key set, added or
    removed; a list item replaced, added, removed or repeated; a list emptied.
    """
    document = copy.deepcopy(draw(base))
    for _ in range(draw(st.integers(0, 3))):
        node: Any = document
        for key in draw(st.sampled_from(list(_containers(document)))):
            node = node[key]
        if isinstance(node, dict):
            if node and draw(st.booleans()):
                del node[draw(st.sampled_from(sorted(node)))]
            else:
                node[draw(st.sampled_from(sorted({*KEYS, *node})))] = draw(VALUES)
        else:
            action = draw(st.sampled_from(["replace", "append", "remove", "repeat", "clear"]))
            if action == "append" or not node:
                node.append(draw(VALUES))
            elif action == "clear":
                node.clear()
            else:
                index = draw(st.integers(0, len(node) - 1))
                if action == "replace":
                    node[index] = draw(VALUES)
                elif action == "remove":
                    del node[index]
                else:
                    node.append(copy.deepcopy(node[index]))
    return document


TEXT = st.text(max_size=6)
TOPICS = st.text(string.ascii_letters + string.digits + "._-", min_size=1, max_size=12)
VERSIONS = st.one_of(shared.versions(), st.integers(-5, 5))


@st.composite
def tosca_policies(draw: st.DrawFn) -> dict[str, Any]:
    """ONAP policies in their several shapes: identity in `metadata`, in `name`/`version`,
    or both; versions as strings or integers.
    """
    policy = draw(shared.tosca_policies())
    for key in draw(st.sets(st.sampled_from(["name", "version", "metadata", "type_version"]))):
        del policy[key]
    if "metadata" in policy and draw(st.booleans()):
        del policy["metadata"][draw(st.sampled_from(["policy-id", "policy-version"]))]
    if draw(st.booleans()):
        target = policy.get("metadata", policy)
        for key in ("policy-version", "version"):
            if key in target:
                target[key] = draw(VERSIONS)
    return policy


def _filters_with_nulls() -> st.SearchStrategy[dict[str, Any]]:
    nulls = st.fixed_dictionaries({}, optional={"policy-id": st.none(), "policy-type": st.none()})
    return st.tuples(nulls, shared.policy_filters()).map(lambda pair: {**pair[0], **pair[1]})


ONAP = {"ONAPName": TEXT | st.none(), "ONAPComponent": TEXT, "ONAPInstance": TEXT}
IDENTS = st.fixed_dictionaries({"name": shared.policy_ids()}, optional={"version": VERSIONS})
POLICY_LISTS = st.lists(tosca_policies(), max_size=3)

DOCUMENTS: dict[str, tuple[type[BaseModel], st.SearchStrategy[dict[str, Any]]]] = {
    "policy-filter": (PolicyFilter, _filters_with_nulls()),
    "subscription-request": (
        SubscriptionRequest,
        st.fixed_dictionaries(
            {"subscriber_topic": TOPICS, "policy-filters": shared.filter_lists()},
            optional={
                **ONAP,
                "action": st.just("configure"),
                "return-policies": st.booleans(),
            },
        ),
    ),
    "decision-request": (
        DecisionRequest,
        st.fixed_dictionaries(
            {},
            optional={
                **ONAP,
                "requestId": TEXT,
                "action": st.sampled_from(["configure", "decide"]),
                "context": st.dictionaries(TEXT, TEXT, max_size=2),
                "resource": shared.policy_filters(),
                "policy-filters": shared.filter_lists(),
            },
        ),
    ),
    "dead-letter-retry": (
        DeadLetterRetry,
        st.fixed_dictionaries(
            {}, optional={"subscriber_ids": st.lists(shared.policy_ids(), min_size=1, max_size=3)}
        ),
    ),
    "policy-push": (
        PolicyPush,
        st.fixed_dictionaries({"policies": st.lists(tosca_policies(), min_size=1, max_size=3)}),
    ),
    "pdp-update": (
        PdpUpdate,
        st.fixed_dictionaries(
            {},
            optional={
                "messageName": st.just("PDP_UPDATE"),
                "requestId": TEXT,
                "name": TEXT,
                "pdpGroup": TEXT,
                "pdpSubgroup": TEXT | st.none(),
                "source": TEXT,
                "pdpHeartbeatIntervalMs": st.integers(-1, 2**31) | st.none(),
                "timestampMs": st.integers(0, 2**41),
                "policies": POLICY_LISTS,
                "policiesToBeDeployed": POLICY_LISTS,
                "policiesToBeUndeployed": st.lists(IDENTS, max_size=3),
            },
        ),
    ),
    "pdp-state-change": (
        PdpStateChange,
        st.fixed_dictionaries(
            {
                "messageName": st.just("PDP_STATE_CHANGE"),
                "state": st.sampled_from(["PASSIVE", "ACTIVE", "SAFE", "TEST", "TERMINATED"]),
            },
            optional={
                "requestId": TEXT,
                "name": TEXT,
                "pdpGroup": TEXT,
                "pdpSubgroup": TEXT,
                "source": TEXT,
                "timestampMs": st.integers(0, 2**41),
            },
        ),
    ),
}


def verdicts(name: str, document: dict[str, Any]) -> tuple[bool, bool, list[str]]:
    """(schema accepts, model accepts, the model's error messages)."""
    model = DOCUMENTS[name][0]
    try:
        model.model_validate(document)
    except ValidationError as exc:
        return schemas.validator(name).is_valid(document), False, [e["msg"] for e in exc.errors()]
    return schemas.validator(name).is_valid(document), True, []


def _unstatable(message: str) -> bool:
    """A refusal JSON Schema cannot state: a repeated policy-id, a contradicted name."""
    return "appears twice" in message or NAME_MISMATCH in message


def assert_same_verdict(name: str, document: dict[str, Any]) -> bool:
    """Fail unless the schema and the model agree on the document; return the verdict."""
    schema_ok, model_ok, messages = verdicts(name, document)
    if schema_ok and not model_ok and all(_unstatable(m) for m in messages):
        return False  # a rule JSON Schema cannot state
    assert schema_ok == model_ok, f"schema says {schema_ok}, model says {model_ok}: {messages}"
    return model_ok


DRIFT = hypothesis.settings(max_examples=120, deadline=None)


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_schema_and_model_agree(name: str) -> None:
    """For generated documents, valid-looking and mutated, the request schema accepts exactly
    what the pydantic model accepts; and the generator reaches both verdicts, so the agreement
    is not vacuous.
    """
    seen: set[bool] = set()

    @DRIFT
    @given(mutated(DOCUMENTS[name][1]))
    def check(document: dict[str, Any]) -> None:
        seen.add(assert_same_verdict(name, document))

    check()
    assert seen == {True, False}


def _filter(**value: Any) -> dict[str, Any]:
    return {"policy-id": "a", **value}


def _subscription(**fields: Any) -> dict[str, Any]:
    return {"subscriber_topic": "t", "policy-filters": [{"policy-id": "a"}], **fields}


def _policy(**fields: Any) -> dict[str, Any]:
    return {"type": "t", "name": "p", "version": "1", **fields}


ONE = {"policy-id": "a"}
BOUNDARIES: list[tuple[str, dict[str, Any], bool]] = [
    ("policy-filter", {"policy-id": "x" * 1024}, True),
    ("policy-filter", {"policy-id": "x" * 1025}, False),
    ("policy-filter", {"policy-type": ["a"] * 10_000}, True),
    ("policy-filter", {"policy-type": ["a"] * 10_001}, False),
    ("policy-filter", {"policy-type": []}, False),
    ("policy-filter", {"policy-id": None, "policy-type": "t"}, True),
    ("policy-filter", {"policy-id": None}, False),
    ("policy-filter", {}, False),
    ("policy-filter", _filter(policy_id="a"), False),
    ("subscription-request", _subscription(subscriber_topic="t" * 255), True),
    ("subscription-request", _subscription(subscriber_topic="t" * 256), False),
    ("subscription-request", _subscription(subscriber_topic="t\n"), False),
    ("subscription-request", _subscription(subscriber_topic="a:b"), False),
    ("subscription-request", _subscription(**{"policy-filters": [ONE] * 1000}), True),
    ("subscription-request", _subscription(**{"policy-filters": [ONE] * 1001}), False),
    ("subscription-request", _subscription(**{"policy-filters": []}), False),
    ("subscription-request", _subscription(action="decide"), False),
    ("subscription-request", _subscription(action=None), False),
    ("subscription-request", _subscription(**{"return-policies": None}), False),
    ("subscription-request", _subscription(**{"return-policies": 1}), False),
    ("subscription-request", _subscription(ONAPName=None), True),
    ("subscription-request", _subscription(ONAPName=3), False),
    ("decision-request", {"resource": {"policy-id": "a"}, "action": "decide"}, True),
    ("decision-request", {"resource": {"policy-id": "a"}, "policy-filters": None}, True),
    ("decision-request", {"resource": ONE, "policy-filters": [ONE]}, False),
    ("decision-request", {"resource": None, "policy-filters": None}, False),
    ("decision-request", {"policy-filters": [{"policy-id": "a"}], "context": None}, True),
    ("decision-request", {"policy-filters": [{"policy-id": "a"}], "context": []}, False),
    ("policy-push", {"policies": [_policy(name="p" * 255)]}, True),
    ("policy-push", {"policies": [_policy(name="p" * 256)]}, False),
    ("policy-push", {"policies": [_policy(name="p\n")]}, False),
    ("policy-push", {"policies": [_policy(version="v" * 255)]}, True),
    ("policy-push", {"policies": [_policy(version="v" * 256)]}, False),
    ("policy-push", {"policies": [_policy(version=True)]}, False),
    ("policy-push", {"policies": [_policy(version=1.5)]}, False),
    ("policy-push", {"policies": [_policy(type="")]}, False),
    ("policy-push", {"policies": [_policy(name=None, metadata={"policy-id": "m"})]}, True),
    ("policy-push", {"policies": [_policy(name=None, metadata={"policy-id": None})]}, False),
    ("policy-push", {"policies": [_policy(version=None, metadata={"policy-version": 7})]}, True),
    ("policy-push", {"policies": [_policy(version=None, metadata=None)]}, False),
    ("policy-push", {"policies": [_policy(extra={"kept": True}, type_version=None)]}, True),
    ("policy-push", {"policies": []}, False),
    ("pdp-update", {}, True),
    ("pdp-update", {"messageName": "PDP_STATE_CHANGE"}, False),
    ("pdp-update", {"messageName": None}, False),
    ("pdp-update", {"policies": [], "policiesToBeDeployed": None}, True),
    ("pdp-update", {"policies": [], "policiesToBeUndeployed": []}, True),
    ("pdp-update", {"pdpHeartbeatIntervalMs": 120000, "timestampMs": 0, "source": "pap"}, True),
    ("pdp-update", {"pdpHeartbeatIntervalMs": -1}, False),
    ("pdp-update", {"pdpGroup": 3}, False),
    ("pdp-update", {"policiesToBeUndeployed": [{"name": "p", "version": None}]}, True),
    ("pdp-update", {"policiesToBeUndeployed": [{"name": "p", "extra": 1}]}, False),
    ("pdp-update", {"policiesToBeUndeployed": [{"version": "1"}]}, False),
    ("pdp-state-change", {"messageName": "PDP_STATE_CHANGE", "state": "ACTIVE"}, True),
    ("pdp-state-change", {"messageName": "PDP_STATE_CHANGE", "state": "active"}, False),
    ("pdp-state-change", {"messageName": "PDP_STATE_CHANGE"}, False),
    ("pdp-state-change", {"state": "ACTIVE"}, False),
    ("pdp-state-change", {"messageName": "PDP_STATE_CHANGE", "state": "TEST", "name": None}, True),
]  # fmt: skip


@pytest.mark.parametrize(("name", "document", "valid"), BOUNDARIES)
def test_boundaries_agree(name: str, document: dict[str, Any], valid: bool) -> None:
    """At each limit and rule of the request models, the schema and the model give the same,
    expected verdict.
    """
    schema_ok, model_ok, messages = verdicts(name, document)
    assert (schema_ok, model_ok) == (valid, valid), messages


def test_repeated_policy_id_is_the_only_tolerated_difference() -> None:
    """A policy-id repeated in one push is refused by the model only; the schema says so."""
    document = {"policies": [_policy(), _policy(properties={"other": 1})]}
    assert verdicts("policy-push", document)[:2] == (True, False)
    assert "uniqueItems" in schemas.load_schema("policy-push")["description"]


def test_policy_list_limit_agrees() -> None:
    """100001 policies are refused by both the model and the schema's maxItems of 100000."""
    document = {"policies": [_policy(name=f"p{i}") for i in range(100_001)]}
    schema_ok, model_ok, _ = verdicts("policy-push", document)
    assert (schema_ok, model_ok) == (False, False)
    first = next(iter(schemas.validator("policy-push").iter_errors(document)))
    assert (first.validator, first.validator_value) == ("maxItems", 100_000)
