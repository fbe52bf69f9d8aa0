"""Random JSON, and random bytes, thrown at every POST route of a live server.

The routes are taken from the application itself, so a new POST route is fuzzed without
touching this file. Each body goes to every route; each answer must be a status the
OpenAPI document declares for the route, with a body valid against the declared schema (so
an error is in the route's error shape), never a 5xx; and a request that was not answered
2xx must have changed nothing: neither the store's revision nor any topic's messages.

Bodies are any JSON value (tests/strategies.py ``any_json``, with object keys often the
request schemas' field names), valid sample bodies with one part replaced by any JSON value
or removed, and arbitrary bytes, all sent as ``application/json``.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import hypothesis
from hypothesis import strategies as st
from starlette.routing import Route

from policy_pubsub import schemas
from policy_pubsub.config import Settings
from policy_pubsub.store import Store
from policy_pubsub.testing import start_server, stop_server
from tests.conftest import load_policy
from tests.strategies import any_json
from tests.test_openapi import Checker

MAX_EXAMPLES = 80
PATH_VALUE = "fuzz.1"  # fits every identifier grammar of the path parameters
REQUEST_SCHEMAS = ("decision-request", "subscription-request", "pdp-update", "policy-push")
State = tuple[int, dict[str, int]]  # the store's revision, and each topic's last offset


def _field_names(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        yield from node.get("properties", {})
        for value in node.values():
            yield from _field_names(value)
    elif isinstance(node, list):
        for item in node:
            yield from _field_names(item)


FIELD_NAMES = sorted(
    {
        name
        for schema in (*REQUEST_SCHEMAS, "tosca-policy")
        for name in _field_names(schemas.load_schema(schema))
    }
)
SEEDS: list[Any] = [
    {"ONAPName": "DCAE", "action": "configure", "resource": {"policy-id": "onap.restart.tca"}},
    {"policy-filters": [{"policy-type": "onap.*"}, {"policy-id": ["a", "b"]}]},
    {"subscriber_topic": "t1", "policy-filters": [{"policy-id": "onap.restart.tca"}]},
    {"policies": [load_policy("onap.restart.tca")]},
    load_policy("pdp-update.delta"),
    [{"a": 1}, {"b": [2]}],
]


def _replace(value: Any, path: list[int], new: Any, drop: bool) -> Any:
    """``value`` with the node reached by ``path`` (each step an index into a container's
    children, modulo their number) replaced by ``new``, or removed when ``drop``.
    """
    if not path or not isinstance(value, dict | list) or not value:
        return new
    step, rest = path[0], path[1:]
    if isinstance(value, dict):
        key = list(value)[step % len(value)]
        copied = dict(value)
        if drop and not rest:
            del copied[key]
        else:
            copied[key] = _replace(value[key], rest, new, drop)
        return copied
    items = list(value)
    index = step % len(items)
    if drop and not rest:
        del items[index]
    else:
        items[index] = _replace(items[index], rest, new, drop)
    return items


def _encode(value: Any, ascii_only: bool) -> bytes:
    # Unescaped, a lone surrogate becomes bytes that are not UTF-8: one more malformed body.
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


JSON = any_json(st.sampled_from(FIELD_NAMES))
MUTATED = st.builds(
    _replace,
    st.sampled_from(SEEDS),
    st.lists(st.integers(min_value=0, max_value=20), max_size=5),
    JSON,
    st.booleans(),
)
BODIES = st.one_of(
    st.builds(_encode, JSON, st.booleans()),
    st.builds(_encode, MUTATED, st.booleans()),
    st.binary(max_size=300),
)


def post_routes(routes: list[Any]) -> list[str]:
    """The path templates of the app's routes that take POST."""
    found = [r.path for r in routes if isinstance(r, Route) and "POST" in (r.methods or ())]
    return sorted(set(found))


async def _state(store: Store) -> State:
    return await store.state.revision(), await store.topics.heads()


def fuzz(url: str, templates: list[str], state: Callable[[], State]) -> None:
    """Send ``MAX_EXAMPLES`` bodies to every route and check each answer. Blocking."""
    with httpx.Client(base_url=url, timeout=30) as http:
        checker = Checker(http.get("/openapi.json").raise_for_status().json())

        @hypothesis.settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        @hypothesis.given(body=BODIES)
        def send(body: bytes) -> None:
            for template in templates:
                before = state()
                r = http.post(
                    re.sub(r"{\w+}", PATH_VALUE, template),
                    content=body,
                    headers={"content-type": "application/json"},
                )
                where = f"POST {template} -> {r.status_code}: {r.text[:300]}"
                assert r.status_code < 500, where
                assert "Traceback" not in r.text, where
                checker.check("POST", template, r)
                if not 200 <= r.status_code < 300:
                    assert state() == before, f"{where}: a refused request changed the store"

        send()


async def test_random_bodies_on_every_post_route(settings: Settings) -> None:
    """Any JSON value or byte string POSTed to any POST route gets a documented answer in the
    documented shape, never a 5xx, and changes nothing unless it is answered 2xx (on each
    store).
    """
    live, task = await start_server(settings)
    loop = asyncio.get_running_loop()
    store: Store = live.state.store

    def state() -> State:
        return asyncio.run_coroutine_threadsafe(_state(store), loop).result(timeout=30)

    templates = post_routes(live.app.routes)
    try:
        assert len(templates) >= 6, templates
        await asyncio.to_thread(fuzz, live.url, templates, state)
    finally:
        await stop_server(live, task)
