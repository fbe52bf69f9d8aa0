"""The route table: the app's routes, the access rules and the OpenAPI document all come from
it, routes match a path to its end, and unknown paths answer as they always did.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from policy_pubsub.api.errors import ErrorShape
from policy_pubsub.api.openapi import document
from policy_pubsub.api.routes import ENDPOINTS, POLL, TABLE, TOPICS
from policy_pubsub.api.state import AppState, app_state
from policy_pubsub.api.table import (
    UNKNOWN,
    Access,
    Endpoint,
    Operation,
    RouteTable,
    TableRoute,
)
from policy_pubsub.testing import LiveServer, start_server, stop_server
from tests.api.helpers import assert_dmaap_error, assert_onap_error
from tests.api.users import IDENTITIES, auth_file
from tests.conftest import make_settings


def http_scope(method: str, path: str) -> dict[str, Any]:
    """A minimal HTTP scope, as the server hands the app (``path`` percent-decoded)."""
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}


def concrete(path: str) -> str:
    """A path of the template, each parameter filled with a valid identifier."""
    return re.sub(r"{\w+}", "x1", path)


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[LiveServer]:
    """A server without an auth file."""
    server, task = await start_server(make_settings(tmp_path))
    try:
        yield server
    finally:
        await stop_server(server, task)


def test_every_starlette_route_comes_from_the_table() -> None:
    """The app's routes are the table's, one per path, with exactly its endpoints' methods."""
    app = Starlette(routes=list(TABLE.routes))
    declared: dict[str, set[str]] = {}
    for endpoint in ENDPOINTS:
        declared.setdefault(endpoint.path, set()).add(endpoint.method)
    served: dict[str, set[str]] = {}
    for route in app.routes:
        assert isinstance(route, TableRoute), route
        served[route.path] = set(route.methods or ()) - {"HEAD"}
        assert set(route.endpoints) == served[route.path], route.path
    assert served == declared


async def test_the_live_app_serves_the_table(live: LiveServer) -> None:
    """The app ``create_app`` makes routes exactly the table's routes and holds the table."""
    assert live.app.routes == TABLE.routes
    assert all(isinstance(route, TableRoute) for route in live.app.routes)
    assert live.state.routes is TABLE


def test_every_endpoint_has_an_operation_and_an_access_rule() -> None:
    """Each endpoint is one operation of the OpenAPI document (and the document has no
    other), and the access middleware finds the endpoint's own rule for its path.
    """
    paths = document(TABLE)["paths"]
    documented = {(method.upper(), path) for path, item in paths.items() for method in item}
    assert documented == {(e.method, e.path) for e in ENDPOINTS}
    ids = [e.operation.operation_id for e in ENDPOINTS]
    assert len(ids) == len(set(ids))
    for endpoint in ENDPOINTS:
        assert isinstance(endpoint.access, Access), endpoint.path
        operation = paths[endpoint.path][endpoint.method.lower()]
        assert operation["operationId"] == endpoint.operation.operation_id
        rule, params = TABLE.access(http_scope(endpoint.method, concrete(endpoint.path)))
        assert rule is endpoint.access, endpoint.path
        assert set(params) == set(re.findall(r"{(\w+)}", endpoint.path)), endpoint.path


def test_access_follows_the_route_the_router_takes() -> None:
    """A wrong method takes its path's rule (the answer is that path's 405); a path the
    router redirects (a final ``/`` added or removed) takes the rule of where it leads;
    a path no endpoint serves is ``UNKNOWN``; the poll's topic is a path parameter.
    """
    assert TABLE.access(http_scope("DELETE", "/topics"))[0] is TOPICS
    assert TABLE.access(http_scope("GET", "/topics/"))[0] is TOPICS
    rule, params = TABLE.access(http_scope("GET", "/events/t1/g/c/"))
    assert rule is POLL and params["topic"] == "t1"
    for path in ("/no/such/route", "/topics/a/b", "/events", "/pap/v1/other", "/"):
        assert TABLE.access(http_scope("GET", path))[0] is UNKNOWN, path


@pytest.mark.parametrize("control", ["\n", "\r", "\r\n", "\x00", "\t", "\x7f"])
def test_routes_match_a_path_to_its_end(control: str) -> None:
    """``/topics`` followed by a control character is no endpoint's path, neither to the
    router nor to the access rules, although a regular expression's ``$`` matches before a
    final newline (Starlette's own routes do).
    """
    assert Route("/topics", Response).path_regex.match("/topics\n") is not None
    scope = http_scope("GET", "/topics" + control)
    assert TABLE.match(scope) is None
    assert TABLE.access(scope)[0] is UNKNOWN
    assert TABLE.route("/topics").path_regex.match("/topics" + control) is None


def test_error_shape_is_the_endpoints_or_its_neighbours() -> None:
    """Endpoints under /events and /topics answer errors in DMaaP's shape, the others in
    ONAP's; an unknown path takes the shape of the endpoints whose first segment it has.
    """
    for endpoint in ENDPOINTS:
        scope = http_scope(endpoint.method, concrete(endpoint.path))
        assert TABLE.shape(scope) is endpoint.shape, endpoint.path
    assert TABLE.shape(http_scope("GET", "/events/a/b/c/d")) is ErrorShape.DMAAP
    assert TABLE.shape(http_scope("GET", "/topics/a/b")) is ErrorShape.DMAAP
    assert TABLE.shape(http_scope("GET", "/no/such/route")) is ErrorShape.ONAP


async def _ok(request: Request) -> Response:
    return Response()


OPERATION = Operation("op", "operations", "An operation", {200: ("OK.", None)})
OPEN = Access("open", frozenset())
OTHER = Access("other", frozenset({"pap"}))


@pytest.mark.parametrize(
    ("endpoints", "why"),
    [
        (
            [
                Endpoint("GET", "/a", OPEN, OPERATION, _ok),
                Endpoint("GET", "/a", OPEN, OPERATION, _ok),
            ],
            "declared twice",
        ),
        (
            [
                Endpoint("GET", "/a", OPEN, OPERATION, _ok),
                Endpoint("POST", "/a", OTHER, OPERATION, _ok),
            ],
            "differ in access",
        ),
        ([Endpoint("GET", "/a", OPEN, OPERATION)], "give handler or asgi"),
        (
            [
                Endpoint("GET", "/a/b", OPEN, OPERATION, _ok, shape=ErrorShape.DMAAP),
                Endpoint("GET", "/a", OPEN, OPERATION, _ok),
            ],
            "error shape differs",
        ),
    ],
)  # fmt: skip
def test_table_refuses_inconsistent_declarations(endpoints: list[Endpoint], why: str) -> None:
    """A method declared twice on a path, methods of one path with different access rules,
    an endpoint without a handler, or error shapes that its path's first segment cannot
    tell apart are refused when the table is made.
    """
    with pytest.raises(ValueError, match=why):
        RouteTable(endpoints)


async def test_unknown_paths_answer_as_before(live: LiveServer) -> None:
    """A path no endpoint serves is a 404 naming it, in the shape of its first segment; a
    path with a final ``/`` too many or too few is redirected; a wrong method is a 405; a
    control character or a malformed percent-encoding is a 400 before any routing.
    """
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
        body = assert_onap_error(await http.get("/no/such/route"), 404)
        assert body["error"] == "No route /no/such/route."
        assert_dmaap_error(await http.get("/events/a/b/c/d"), 404)
        assert_dmaap_error(await http.get("/topics/a/b"), 404)
        assert_onap_error(await http.get("/pap/v1/other"), 404)
        assert_dmaap_error(await http.get("/topics%0A"), 400)
        assert_dmaap_error(await http.get("/topics/a%zz"), 400)
        assert_onap_error(await http.get("/pap/v1/policies%00"), 400)
        redirect = await http.get("/topics/")
        assert redirect.status_code == 307
        assert redirect.headers["location"] == f"{live.url}/topics"
        assert_onap_error(await http.put("/pap/v1/policies", json={}), 405)


async def test_unknown_paths_with_an_auth_file_need_a_known_user(tmp_path: Path) -> None:
    """With an auth file, anonymous is a 401 on any path no endpoint serves; a known user
    gets the 404; a redirect is refused to whom the endpoint it leads to is refused; a path
    with a control character is a 400 for everyone, before credentials are looked at.
    """
    settings = make_settings(tmp_path, auth_file=str(auth_file(tmp_path)))
    server, task = await start_server(settings)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            for identity in ("anonymous", "pap", "tca", "admin"):
                r = await http.get("/topics%0A", headers=IDENTITIES[identity])
                assert r.status_code == 400, identity
            for path in ("/no/such/route", "/events/a/b/c/d"):
                assert (await http.get(path)).status_code == 401, path
                for identity in ("pap", "tca", "admin"):
                    r = await http.get(path, headers=IDENTITIES[identity])
                    assert r.status_code == 404, f"{identity}: {path}"
            assert (await http.get("/topics/", headers=IDENTITIES["pap"])).status_code == 403
            admin = await http.get("/topics/", headers=IDENTITIES["admin"])
            assert admin.status_code == 307
    finally:
        await stop_server(server, task)


async def test_app_state_is_typed_and_shared(live: LiveServer) -> None:
    """``app_state`` gives the app's one ``AppState``, with the parts the lifespan opened; an
    app that ``create_app`` did not make has none.
    """
    state = app_state(live.app)
    assert isinstance(state, AppState)
    assert state is live.state
    assert state.settings is live.settings
    assert state.running is not None
    assert state.service is state.running.service and state.router is state.running.router
    assert state.relay is None  # the embedded router keeps its messages in the store
    with pytest.raises(RuntimeError, match="not a policy-pubsub application"):
        app_state(Starlette())
