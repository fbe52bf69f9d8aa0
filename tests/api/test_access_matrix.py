"""Every endpoint of the route table, every role, and variants of every path: nothing reaches
a handler it should not.

The matrix is made from ``policy_pubsub.api.routes.TABLE``, so an endpoint added to the table
is checked without editing this file. For each endpoint a role may not call, the exact path and
its variants (doubled, trailing and leading slashes, case-shifted, percent-encoded slashes and
letters) must be refused (400, 401, 403, 404, 405 or a redirect, never 2xx or 5xx); a control
character anywhere in a path is a 400 for everyone; methods no endpoint has are refused; and
afterwards the store is as it was.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from policy_pubsub.api.routes import TABLE
from policy_pubsub.api.table import Endpoint, Openness
from policy_pubsub.auth import COMPONENT
from policy_pubsub.testing import start_server, stop_server
from tests.api.helpers import tosca
from tests.api.users import (
    ADMIN,
    DECISION,
    IDENTITIES,
    OTHER_TOPIC,
    ROLE,
    auth_file,
    setup_state,
    snapshot,
    sub,
)
from tests.conftest import load_policy, make_settings

# Path parameters filled so that a component's request is about what is not its own.
PARAMETERS = {
    "topic": OTHER_TOPIC,
    "subscriber_id": "other-1",
    "policy_id": "p0",
    "consumer_group": "g",
    "consumer_id": "c",
}
# A body each endpoint would act on if the request reached it.
BODIES: dict[str, Any] = {
    "decide": DECISION,
    "decideAlias": DECISION,
    "subscribe": sub("policies_DCAE_tca_smuggled"),
    "pdpUpdate": load_policy("pdp-update.delta"),
    "deployPolicies": {"policies": [tosca("p-smuggled")]},
    "publish": {"hello": "smuggled"},
}
REFUSED = {301, 307, 308, 400, 401, 403, 404, 405}
NO_SUCH_METHODS = ("PUT", "PATCH", "TRACE", "PROPFIND")


def _path(endpoint: Endpoint) -> str:
    return endpoint.path.format(**PARAMETERS)


def variants(path: str) -> Iterator[str]:
    """The path as written elsewhere: each a path a careless rule might not recognise."""
    yield path
    yield path + "/"
    yield "/" + path
    yield path.replace("/", "//")
    yield path.upper()
    yield path[:2] + path[2:].swapcase()
    yield path.replace("/", "%2F")
    yield path[0] + "%" + f"{ord(path[1]):02X}" + path[2:]  # the first letter encoded
    yield path + "%20"
    yield path + ";x=1"


def may_call(identity: str, endpoint: Endpoint) -> bool:
    """Whether the table lets ``identity`` call ``endpoint`` with the test's parameters."""
    role = ROLE[identity]
    access = endpoint.access
    if role == "admin" or access.open is not Openness.NEVER:
        return True
    if role is None or role not in access.roles:
        return False
    # A component's topic patterns do not cover OTHER_TOPIC.
    return not (role == COMPONENT and access.topic is not None)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    live, task = await start_server(
        make_settings(tmp_path, auth_file=str(auth_file(tmp_path)), metrics_public=False)
    )
    try:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
            yield http
    finally:
        await stop_server(live, task)


@pytest.mark.parametrize("identity", [i for i in IDENTITIES if i != "admin"])
async def test_no_variant_of_a_path_reaches_an_endpoint_the_caller_may_not_use(
    identity: str, client: httpx.AsyncClient
) -> None:
    await setup_state(client)
    before = await snapshot(client, ADMIN)
    checked = 0
    for endpoint in TABLE.endpoints:
        if may_call(identity, endpoint):
            continue
        body = BODIES.get(endpoint.operation.operation_id)
        for path in variants(_path(endpoint)):
            r = await client.request(endpoint.method, path, json=body, headers=IDENTITIES[identity])
            where = f"{identity}: {endpoint.method} {path}"
            assert r.status_code in REFUSED, f"{where}: {r.status_code} {r.text[:300]}"
            checked += 1
    assert checked > 0 or identity == "admin"
    assert await snapshot(client, ADMIN) == before


@pytest.mark.parametrize("control", ["%0A", "%0D", "%00", "%09", "%1B", "%7F"])
async def test_a_control_character_anywhere_in_any_path_is_400_for_everyone(
    control: str, client: httpx.AsyncClient
) -> None:
    await setup_state(client)
    before = await snapshot(client, ADMIN)
    for endpoint in TABLE.endpoints:
        path = _path(endpoint)
        cut = path.index("/", 1) if "/" in path[1:] else len(path)
        body = BODIES.get(endpoint.operation.operation_id)
        for placed in (path + control, path[:cut] + control + path[cut:]):
            for identity, headers in IDENTITIES.items():
                r = await client.request(endpoint.method, placed, json=body, headers=headers)
                assert r.status_code == 400, f"{identity}: {endpoint.method} {placed}"
    assert await snapshot(client, ADMIN) == before


async def test_methods_no_endpoint_has_are_refused_for_everyone(
    client: httpx.AsyncClient,
) -> None:
    await setup_state(client)
    before = await snapshot(client, ADMIN)
    for path in sorted({_path(endpoint) for endpoint in TABLE.endpoints}):
        for method in NO_SUCH_METHODS:
            for identity, headers in IDENTITIES.items():
                r = await client.request(method, path, headers=headers)
                assert r.status_code in REFUSED, f"{identity}: {method} {path}: {r.status_code}"
    assert await snapshot(client, ADMIN) == before
