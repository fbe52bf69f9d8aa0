"""``GET /openapi.json``: a well-formed OpenAPI 3.1 document of exactly the server's routes,
whose declared statuses and schemas are those the server really answers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from starlette.routing import Route

from policy_pubsub import constants, schemas
from policy_pubsub.api.access import SIGNATURE_HEADER
from policy_pubsub.api.openapi import component
from tests.conftest import LiveServer, load_policy

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
DOCUMENT_URI = "urn:policy-pubsub:openapi"


async def fetch(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/openapi.json")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    document: dict[str, Any] = r.json()
    return document


def _walk(node: Any, pointer: str = "") -> Iterator[tuple[str, Any]]:
    yield pointer, node
    if isinstance(node, (dict, list)):
        children = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in children:
            yield from _walk(child, f"{pointer}/{key}")


def _refs(node: Any) -> set[str]:
    return {
        child["$ref"]
        for _, child in _walk(node)
        if isinstance(child, dict) and isinstance(child.get("$ref"), str)
    }


def resolve(document: dict[str, Any], ref: str) -> Any:
    """The node an internal ``#/...`` reference points to; KeyError/IndexError if none."""
    assert ref.startswith("#/"), f"not an internal reference: {ref}"
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


async def test_document_is_openapi_3_1(client: httpx.AsyncClient) -> None:
    """The document has the OpenAPI 3.1 skeleton: version, info, paths of operations with
    unique ids, described responses and declared path parameters.
    """
    document = await fetch(client)
    assert re.fullmatch(r"3\.1\.\d+", document["openapi"])
    assert document["info"]["title"] == "policy-pubsub"
    assert isinstance(document["info"]["version"], str) and document["info"]["version"]
    assert document["jsonSchemaDialect"] == "https://json-schema.org/draft/2020-12/schema"
    ids = [operation["operationId"] for _, _, operation in operations(document)]
    assert len(ids) == len(set(ids))
    tags = {tag["name"] for tag in document["tags"]}
    for path, method, operation in operations(document):
        where = f"{method} {path}"
        assert path.startswith("/") and method in METHODS, where
        assert set(operation["tags"]) <= tags, where
        assert operation["responses"], where
        for status, response in operation["responses"].items():
            assert re.fullmatch(r"[1-5]\d\d", status), where
            response = resolve(document, response["$ref"]) if "$ref" in response else response
            assert response["description"], f"{where} {status}"
        parameters = [resolve(document, p["$ref"]) for p in operation["parameters"]]
        for parameter in parameters:
            assert parameter["in"] in {"path", "query", "header", "cookie"}, where
            assert "schema" in parameter, where
        in_path = {p["name"] for p in parameters if p["in"] == "path"}
        assert in_path == set(re.findall(r"{(\w+)}", path)), where
        assert all(p["required"] for p in parameters if p["in"] == "path"), where
        if "requestBody" in operation:
            assert operation["requestBody"]["content"], where


async def test_every_route_is_documented(server: LiveServer, client: httpx.AsyncClient) -> None:
    """Every route of the application is a path of the document with exactly its methods
    (HEAD, which Starlette adds to GET, aside), and the document has no other operation.
    """
    document = await fetch(client)
    routes: dict[str, set[str]] = {}
    for route in server.app.routes:
        assert isinstance(route, Route), route
        routes.setdefault(route.path, set()).update(
            method.lower() for method in route.methods or () if method != "HEAD"
        )
    documented = {path: set(item) for path, item in document["paths"].items()}
    assert documented == routes


async def test_every_ref_resolves_inside_the_document(client: httpx.AsyncClient) -> None:
    """Every $ref of the document points inside it, at a node that exists."""
    document = await fetch(client)
    refs = [
        (pointer, node["$ref"])
        for pointer, node in _walk(document)
        if isinstance(node, dict) and isinstance(node.get("$ref"), str)
    ]
    assert len(refs) > 50
    for pointer, ref in refs:
        try:
            resolve(document, ref)
        except (KeyError, IndexError, ValueError):
            pytest.fail(f"{pointer}: $ref {ref} does not resolve")


async def test_components_are_the_schema_files(client: httpx.AsyncClient) -> None:
    """components/schemas holds each schemas/v1 file, a valid 2020-12 schema without $id,
    and each is reached from the paths, except SnapshotMessage (what topics carry).
    """
    document = await fetch(client)
    components = document["components"]["schemas"]
    assert set(components) == {component(name) for name in schemas.names()}
    for name in schemas.names():
        embedded = components[component(name)]
        Draft202012Validator.check_schema(embedded)
        assert "$id" not in embedded and "$schema" not in embedded
        assert embedded["title"] == schemas.load_schema(name)["title"]
    reached: set[str] = set()
    todo = _refs(document["paths"])
    while todo:
        ref = todo.pop()
        top = "/".join(ref.split("/")[:4])  # #/components/<kind>/<name>
        if top not in reached:
            reached.add(top)
            todo |= _refs(resolve(document, top))
    unused = {f"#/components/schemas/{name}" for name in components} - reached
    # The long-poll answers JSON text; on a subscriber topic each is a SnapshotMessage.
    assert unused == {"#/components/schemas/SnapshotMessage"}


async def test_parameters_carry_the_servers_grammar(client: httpx.AsyncClient) -> None:
    """Path parameters have the identifier patterns of policy_pubsub.constants, and the
    long-poll's query parameters the server's ranges and defaults.
    """
    document = await fetch(client)
    parameters = document["components"]["parameters"]
    expected = {
        "subscriber_id": constants.SUBSCRIBER_ID_PATTERN,
        "policy_id": constants.POLICY_ID_PATTERN,
        "topic": constants.TOPIC_PATTERN,
        "consumer_group": constants.CONSUMER_PATTERN,
        "consumer_id": constants.CONSUMER_PATTERN,
    }
    for name, pattern in expected.items():
        assert parameters[name]["schema"]["pattern"] == pattern, name
    limit = parameters["limit"]["schema"]
    assert (limit["minimum"], limit["maximum"]) == (1, constants.MAX_POLL_LIMIT)
    assert limit["default"] == constants.DEFAULT_POLL_LIMIT
    assert parameters["timeout"]["schema"]["default"] == constants.DEFAULT_POLL_TIMEOUT_MS


class Checker:
    """Checks real answers against the document: the status is declared for the operation,
    and the body is valid against the schema declared for that status.
    """

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        resource = DRAFT202012.create_resource(document)
        self.registry: Registry[Any] = Registry().with_resource(DOCUMENT_URI, resource)
        self.seen: set[tuple[str, str, str]] = set()

    def check(self, method: str, template: str, r: httpx.Response) -> None:
        status = str(r.status_code)
        where = f"{method} {template} -> {status}"
        responses = self.document["paths"][template][method.lower()]["responses"]
        assert status in responses, f"{where} is not documented: {r.text[:300]}"
        self.seen.add((method.lower(), template, status))
        content = responses[status].get("content")
        if content is None:
            assert not r.content, where
            return
        if "application/json" not in content:  # /metrics: the Prometheus text format
            assert r.headers["content-type"].split(";")[0] in content, where
            return
        escaped = template.replace("~", "~0").replace("/", "~1")
        pointer = f"/paths/{escaped}/{method.lower()}/responses/{status}/content"
        schema = {"$ref": f"{DOCUMENT_URI}#{pointer}/application~1json/schema"}
        validator = Draft202012Validator(
            schema, registry=self.registry, format_checker=Draft202012Validator.FORMAT_CHECKER
        )
        problems = [
            f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(r.json())
        ]
        assert not problems, f"{where}: {problems}"


SUB = "/decision/v1/subscription/{subscriber_id}"
POLICY = "/pap/v1/policies/{policy_id}"
POLL = "/events/{topic}/{consumer_group}/{consumer_id}"
RETRY = "/dead-letters/retry"
SUBSCRIPTION = {"subscriber_topic": "t1", "policy-filters": [{"policy-id": "onap.restart.tca"}]}


async def test_real_answers_match_the_document(client: httpx.AsyncClient) -> None:
    """Driving every operation to its success and error answers, each status is declared for
    the operation and each body is valid against the declared schema.
    """
    c = Checker(await fetch(client))
    policy = load_policy("onap.restart.tca")
    delta = load_policy("pdp-update.delta")
    text = {"content": b"{}", "headers": {"content-type": "text/plain"}}
    by_id = {"json": {"resource": {"policy-id": "onap.restart.tca"}}}
    by_type = {"json": {"resource": {"policy-type": "onap.*"}}}
    bad_action = {"json": {"action": "x", "resource": {"policy-id": "a"}}}
    pdpx = "/policy/pdpx/v1/decision"
    update = "/pap/v1/pdp-update"
    calls: list[tuple[str, str, str, dict[str, Any]]] = [
        ("POST", SUB, "/decision/v1/subscription/tca-1", {"json": SUBSCRIPTION}),
        ("POST", SUB, "/decision/v1/subscription/tca-1", {"json": SUBSCRIPTION}),
        ("POST", SUB, "/decision/v1/subscription/tca-1", {"json": {}}),
        ("POST", SUB, "/decision/v1/subscription/tca-1", {"content": b"x"}),
        ("POST", "/pap/v1/policies", "/pap/v1/policies", {"json": {"policies": [policy]}}),
        ("POST", "/pap/v1/policies", "/pap/v1/policies", {"json": {"policies": []}}),
        ("GET", "/pap/v1/policies", "/pap/v1/policies", {}),
        ("GET", POLICY, "/pap/v1/policies/onap.restart.tca", {}),
        ("GET", POLICY, "/pap/v1/policies/unknown", {}),
        ("GET", POLICY, "/pap/v1/policies/bad%20id", {}),
        ("GET", SUB, "/decision/v1/subscription/tca-1", {}),
        ("GET", SUB, "/decision/v1/subscription/unknown", {}),
        ("GET", "/decision/v1/subscription", "/decision/v1/subscription", {}),
        ("GET", "/decision/v1/subscription", "/decision/v1/subscription?stale=x", {}),
        ("POST", update, update, {"json": delta}),
        ("POST", update, update, {"json": {"policies": [policy]}}),
        ("POST", update, update, text),
        ("POST", "/decision/v1", "/decision/v1?abbrev=true", by_id),
        ("POST", pdpx, pdpx, by_type),
        ("POST", pdpx, pdpx, bad_action),
        ("POST", "/events/{topic}", "/events/t2", {"json": [{"a": 1}]}),
        ("POST", "/events/{topic}", "/events/t2", {"json": "text"}),
        ("GET", POLL, "/events/t1/g/c?timeout=1000", {}),
        ("GET", POLL, "/events/t2/g/c?timeout=1000", {}),
        ("GET", POLL, "/events/t2/g/c?timeout=0", {}),
        ("GET", POLL, "/events/unknown/g/c?timeout=0", {}),
        ("GET", POLL, "/events/t2/g/c?limit=0", {}),
        ("GET", "/topics", "/topics", {}),
        ("GET", "/topics/{topic}", "/topics/t1", {}),
        ("GET", "/topics/{topic}", "/topics/unknown", {}),
        ("GET", "/dead-letters", "/dead-letters", {}),
        ("POST", RETRY, RETRY, {"json": {}}),
        ("POST", RETRY, RETRY, {"json": {"subscriber_ids": ["tca-1"]}}),
        ("POST", RETRY, RETRY, {"json": {"subscriber_ids": []}}),
        ("GET", "/healthcheck", "/healthcheck", {}),
        ("GET", "/openapi.json", "/openapi.json", {}),
        ("GET", "/metrics", "/metrics", {}),
        ("DELETE", POLICY, "/pap/v1/policies/onap.restart.tca", {}),
        ("DELETE", POLICY, "/pap/v1/policies/onap.restart.tca", {}),
        ("DELETE", SUB, "/decision/v1/subscription/tca-1", {}),
        ("DELETE", SUB, "/decision/v1/subscription/tca-1", {}),
    ]  # fmt: skip
    for method, template, url, kwargs in calls:
        c.check(method, template, await client.request(method, url, **kwargs))
    answered = {(status, method) for method, _, status in c.seen}
    assert {("201", "post"), ("204", "delete"), ("404", "get"), ("415", "post")} <= answered
    assert {template for _, template, _ in c.seen} == set(c.document["paths"])


async def test_authentication_is_documented(client: httpx.AsyncClient) -> None:
    """Basic and Bearer are required everywhere but /healthcheck and /openapi.json; every
    other operation documents 401 (with WWW-Authenticate) and 403 in its path's error shape,
    and the /pap operations take the webhook signature header, optionally.
    """
    document = await fetch(client)
    schemes = document["components"]["securitySchemes"]
    assert {name: (s["type"], s["scheme"]) for name, s in schemes.items()} == {
        "basic": ("http", "basic"),
        "bearer": ("http", "bearer"),
    }
    assert document["security"] == [{"basic": []}, {"bearer": []}]
    for path, method, operation in operations(document):
        where = f"{method} {path}"
        responses = operation["responses"]
        if path in ("/healthcheck", "/openapi.json"):
            assert operation["security"] == [], where
            assert not {"401", "403"} & set(responses), where
        else:
            assert "security" not in operation, where
            shape = "MrError" if path.startswith(("/events", "/topics")) else "Error"
            for status in ("401", "403"):
                schema = responses[status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": f"#/components/schemas/{shape}"}, where
            assert "WWW-Authenticate" in responses["401"]["headers"], where
        parameters = [resolve(document, p["$ref"]) for p in operation["parameters"]]
        signed = [p for p in parameters if p["name"] == SIGNATURE_HEADER]
        assert len(signed) == path.startswith("/pap/"), where
        assert all(p["in"] == "header" and not p["required"] for p in signed), where


async def test_refusals_of_oversize_snapshots_match_the_document(
    client: httpx.AsyncClient,
) -> None:
    """A subscribe, a push and a PDP_UPDATE refused because a snapshot would exceed the
    router's largest message (1 MiB, embedded) answer a documented 413 in a declared shape:
    the ONAP error, and for the PDP_UPDATE a PDP_STATUS with FAIL.
    """
    c = Checker(await fetch(client))
    huge = {**load_policy("onap.restart.tca"), "properties": {"padding": "x" * 1_100_000}}
    first = {**huge, "name": "huge.a", "metadata": {"policy-id": "huge.a", "policy-version": "1"}}
    second = {**huge, "name": "huge.b", "metadata": {"policy-id": "huge.b", "policy-version": "1"}}
    update = "/pap/v1/pdp-update"
    calls: list[tuple[str, str, str, dict[str, Any], int]] = [
        ("POST", "/pap/v1/policies", "/pap/v1/policies", {"json": {"policies": [first]}}, 200),
        ("POST", SUB, "/decision/v1/subscription/s1",
         {"json": {"subscriber_topic": "t1", "policy-filters": [{"policy-id": "huge.a"}]}}, 413),
        ("POST", SUB, "/decision/v1/subscription/s2",
         {"json": {"subscriber_topic": "t2", "policy-filters": [{"policy-id": "huge.b"}]}}, 201),
        ("POST", "/pap/v1/policies", "/pap/v1/policies", {"json": {"policies": [second]}}, 413),
        ("POST", update, update,
         {"json": {"messageName": "PDP_UPDATE", "policiesToBeDeployed": [second]}}, 413),
    ]  # fmt: skip
    for method, template, url, kwargs, status in calls:
        r = await client.request(method, url, **kwargs)
        assert r.status_code == status, r.text[:300]
        c.check(method, template, r)
