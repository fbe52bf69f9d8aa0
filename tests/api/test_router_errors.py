"""Errors of the message router routes (/events, /topics): the DMaaP shape, nothing changed.

The refused requests run against one server, seeded with a subscription, a policy and a
topic; each test compares the whole visible state before and after its request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.api.helpers import assert_dmaap_error, push, state, subscribe
from tests.conftest import LiveServer, load_policy, make_settings, start_server, stop_server

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveServer]:
    """A server holding subscription tca-1 on t1, policy onap.restart.tca and topic raw."""
    live, task = await start_server(make_settings(tmp_path_factory.mktemp("router-errors")))
    try:
        async with httpx.AsyncClient(base_url=live.url) as http:
            await subscribe(http, "tca-1", "t1", [{"policy-id": "onap.restart.tca"}])
            await push(http, load_policy("onap.restart.tca"))
            assert (await http.post("/events/raw", json={"n": 1})).status_code == 200
        yield live
    finally:
        await stop_server(live, task)


@pytest_asyncio.fixture(loop_scope="module")
async def http(shared: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=shared.url, timeout=30) as client:
        yield client


def case(name: str, method: str, path: str, status: int, **request: Any) -> Any:
    return pytest.param(method, path, request, status, id=name)


RAW = "/events/raw"
POLL = "/events/raw/g1/c1"

DMAAP_CASES = [
    case(
        "poll-unknown-topic",
        "GET",
        "/events/nosuch/g1/c1?timeout=0",
        404,
        message="No such topic exists.-[nosuch]",
    ),
    case("topic-unknown", "GET", "/topics/nosuch", 404, message="No such topic exists.-[nosuch]"),
    case("poll-timeout-word", "GET", f"{POLL}?timeout=soon", 400),
    case("poll-timeout-negative", "GET", f"{POLL}?timeout=-1", 400),
    case("poll-timeout-fraction", "GET", f"{POLL}?timeout=1.5", 400),
    case("poll-timeout-empty", "GET", f"{POLL}?timeout=", 400),
    case("poll-timeout-huge", "GET", f"{POLL}?timeout=99999999999999999999", 400),
    case("poll-limit-zero", "GET", f"{POLL}?limit=0&timeout=0", 400),
    case("poll-limit-word", "GET", f"{POLL}?limit=all&timeout=0", 400),
    case("poll-limit-too-big", "GET", f"{POLL}?limit=10001&timeout=0", 400),
    case("poll-bad-topic", "GET", "/events/bad%20topic/g1/c1?timeout=0", 400),
    case("poll-bad-group", "GET", "/events/raw/bad%20group/c1?timeout=0", 400),
    case("poll-bad-consumer", "GET", f"/events/raw/g1/{'c' * 256}?timeout=0", 400),
    case("topic-bad-name", "GET", "/topics/bad%20topic", 400),
    case("publish-malformed", "POST", RAW, 400, content=b'{"n": '),
    case("publish-invalid-utf8", "POST", RAW, 400, content=b'{"n": "\xff"}'),
    case("publish-empty-array", "POST", RAW, 400, json=[]),
    case("publish-array-of-numbers", "POST", RAW, 400, json=[{"n": 2}, 3]),
    case("publish-string", "POST", RAW, 400, json="message"),
    case("publish-bad-topic", "POST", "/events/bad%20topic", 400, json={"n": 2}),
    case(
        "publish-text-plain",
        "POST",
        RAW,
        415,
        content=b"hello",
        headers={"content-type": "text/plain"},
    ),
    case("events-wrong-method", "GET", RAW, 405),
    case("topics-wrong-method", "DELETE", "/topics/raw", 405),
    case("topics-unknown-route", "GET", "/topics/raw/extra", 404),
]


@pytest.mark.parametrize(("method", "path", "request_args", "status"), DMAAP_CASES)
async def test_refused_in_dmaap_shape(
    shared: LiveServer,
    http: httpx.AsyncClient,
    method: str,
    path: str,
    request_args: dict[str, Any],
    status: int,
) -> None:
    """On /events and /topics a refused request answers in the DMaaP shape and changes
    nothing: no topic, no message, no consumer position.
    """
    args = dict(request_args)
    message = args.pop("message", None)
    before = await state(http, shared)
    r = await http.request(method, path, **args)
    assert_dmaap_error(r, status, message)
    assert await state(http, shared) == before


@pytest.mark.parametrize("param", ["timeout", "limit"])
async def test_poll_parameter_with_a_superscript_digit(
    shared: LiveServer, http: httpx.AsyncClient, param: str
) -> None:
    """A poll whose timeout or limit uses digits other than ASCII 0-9 is a 400."""
    before = await state(http, shared)
    for value in ("²", "\u0661\u0660"):  # a superscript two; Arabic-Indic one, zero
        r = await http.get(POLL, params={param: value})
        assert_dmaap_error(r, 400)
    assert await state(http, shared) == before


async def test_refused_requests_left_the_topics_intact(
    shared: LiveServer, http: httpx.AsyncClient
) -> None:
    """After all the refused requests, the seeded topics hold their messages and no group."""
    topics = (await state(http, shared))["topics"]
    assert sorted(topics) == ["raw", "t1"]
    assert (topics["raw"]["messages"], topics["raw"]["consumer_groups"]) == (1, [])
    assert (topics["t1"]["messages"], topics["t1"]["consumer_groups"]) == (2, [])
