"""The endpoints answered in front of Starlette's router (``policy_pubsub.api.front``): they
answer exactly as the router and the exception middleware would, and only they are answered
there.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from policy_pubsub.api import EXCEPTION_HANDLERS
from policy_pubsub.api.front import FrontRoutes
from policy_pubsub.api.routes import TABLE
from policy_pubsub.api.table import Endpoint, Operation, RouteTable
from tests.api.test_routes import concrete

OPERATION = Operation("x", "x", "x", {200: ("ok", None)})


class Refused(Exception):
    """Answered by its handler."""


class RefusedAgain(Refused):
    """A subclass: answered by its parent's handler."""


class HandlerFails(Exception):
    """Its handler raises ``Refused``, which the exception middleware then answers."""


async def on_refused(request: Request, exc: Exception) -> Response:
    return JSONResponse({"refused": str(exc), "path": request.url.path}, status_code=409)


async def on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return PlainTextResponse(f"http {exc.status_code}", exc.status_code, exc.headers)


async def on_418(request: Request, exc: Exception) -> Response:
    return PlainTextResponse("a teapot", 418)


async def on_handler_fails(request: Request, exc: Exception) -> Response:
    raise Refused("from the handler")


async def on_unexpected(request: Request, exc: Exception) -> Response:
    return PlainTextResponse("unexpected", 500)


HANDLERS: dict[Any, Any] = {
    Refused: on_refused,
    HTTPException: on_http,
    418: on_418,
    HandlerFails: on_handler_fails,
    Exception: on_unexpected,
}

RAISED: dict[str, Exception] = {
    "refused": Refused("no"),
    "subclass": RefusedAgain("not either"),
    "http": HTTPException(404, headers={"X-Why": "gone"}),
    "teapot": HTTPException(418),
    "handler-fails": HandlerFails(),
    "unexpected": ValueError("a bug"),
}


async def answer(request: Request) -> Response:
    what = request.path_params.get("what", "")
    if what in RAISED:
        raise RAISED[what]
    return JSONResponse(
        {"what": what, "body": (await request.body()).decode(), "q": request.url.query}, 201
    )


async def other(request: Request) -> Response:
    return PlainTextResponse("other")


class Raw:
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await PlainTextResponse(f"raw {scope['path_params']['name']}")(scope, receive, send)


def table() -> RouteTable:
    return RouteTable(
        [
            Endpoint("POST", "/a/{what}", _access(), OPERATION, answer, front=True),
            Endpoint("GET", "/a/{what}", _access(), OPERATION, other),
            Endpoint("POST", "/b", _access(), OPERATION, answer, front=True),
            Endpoint("GET", "/raw/{name}", _access(), OPERATION, asgi=Raw(), front=True),
            Endpoint("POST", "/c", _access(), OPERATION, other),
        ]
    )


def _access() -> Any:
    return TABLE.routes[0].access


def app(front: bool) -> Starlette:
    routes = table()
    middleware = (
        [Middleware(FrontRoutes, table=routes, exception_handlers=HANDLERS)] if front else []
    )
    return Starlette(routes=list(routes.routes), middleware=middleware, exception_handlers=HANDLERS)


REQUESTS = [
    ("POST", "/a/fine?x=1", b'{"k": 1}'),
    ("POST", "/b", b"body"),
    *[("POST", f"/a/{what}", b"") for what in RAISED],
    ("GET", "/a/fine", b""),  # the route's other method: the router's
    ("PUT", "/a/fine", b""),  # 405
    ("DELETE", "/b", b""),  # 405
    ("POST", "/b/", b""),  # the router's redirect
    ("POST", "/c", b""),
    ("POST", "/nowhere", b""),  # 404
    ("GET", "/raw/r1", b""),
    ("HEAD", "/raw/r1", b""),  # 405: a raw endpoint's HEAD is not GET's
]


@pytest.mark.parametrize(("method", "path", "body"), REQUESTS)
async def test_answers_as_the_router_and_exception_middleware_do(
    method: str, path: str, body: bytes
) -> None:
    """Status, headers and body are the same with the middleware as without it: handled
    exceptions (by class along the MRO, by status, a handler that raises in turn) and
    unhandled ones (the server-error middleware's 500) included.
    """
    answers = []
    for front in (True, False):
        transport = httpx.ASGITransport(app=app(front), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.request(method, path, content=body)
        answers.append((r.status_code, sorted(r.headers.items()), r.content))
    assert answers[0] == answers[1]
    assert answers[0][0] != 0


async def test_only_front_endpoints_are_answered_in_front() -> None:
    """A front endpoint never reaches the app behind the middleware; every other request
    (another method on the path, another path) does.
    """
    reached: list[tuple[str, str]] = []

    async def behind(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append((scope["method"], scope["path"]))
        await PlainTextResponse("behind")(scope, receive, send)

    transport = httpx.ASGITransport(app=FrontRoutes(behind, table(), HANDLERS))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.post("/a/fine")).status_code == 201
        assert (await client.post("/b")).status_code == 201
        assert (await client.get("/raw/x")).text == "raw x"
        assert (await client.get("/a/fine")).text == "behind"
        assert (await client.post("/c")).text == "behind"
        assert (await client.post("/b/")).text == "behind"
    assert reached == [("GET", "/a/fine"), ("POST", "/c"), ("POST", "/b/")]


def test_a_path_an_earlier_route_matches_is_not_answered_in_front() -> None:
    """The router hands a path to the first route that matches it: a front route behind
    another that matches the same path is not answered in front for that path.
    """
    routes = RouteTable(
        [
            Endpoint("GET", "/x/{name}", _access(), OPERATION, other),
            Endpoint("POST", "/x/y", _access(), OPERATION, answer, front=True),
        ]
    )
    front = FrontRoutes(other, routes, HANDLERS)
    found = front.match("/x/y")
    assert found is not None
    assert found[0].path == "/x/{name}"


def test_the_hot_endpoints_of_the_app_are_answered_in_front() -> None:
    """The decision API, subscribe and unsubscribe, the PAP pushes and the long-poll: their
    paths match their own routes in front; the rest of the table goes to the router.
    """
    front = FrontRoutes(other, TABLE, EXCEPTION_HANDLERS)
    answered = set()
    for endpoint in TABLE.endpoints:
        found = front.match(concrete(endpoint.path))
        if endpoint.front:
            assert found is not None
            assert found[0].path == endpoint.path
            assert set(found[1]) == set(re.findall(r"{(\w+)}", endpoint.path))
            answered.add((endpoint.method, endpoint.path))
    assert answered == {
        ("POST", "/policy/pdpx/v1/decision"),
        ("POST", "/decision/v1"),
        ("POST", "/decision/v1/subscription/{subscriber_id}"),
        ("DELETE", "/decision/v1/subscription/{subscriber_id}"),
        ("POST", "/pap/v1/pdp-update"),
        ("POST", "/pap/v1/policies"),
        ("DELETE", "/pap/v1/policies/{policy_id}"),
        ("GET", "/events/{topic}/{consumer_group}/{consumer_id}"),
    }
