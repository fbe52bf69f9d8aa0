"""Regressions found by the fuzzers (tests/test_fuzz_openapi.py, tests/test_fuzz_json.py),
each on every store: the input that gave a 5xx now gets a 400 naming the problem, and
changes nothing.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from policy_pubsub.testing import LiveServer
from tests.api.helpers import (
    PDP_UPDATE,
    POLICIES,
    SUBSCRIPTIONS,
    assert_dmaap_error,
    assert_onap_error,
    state,
    tosca,
)

NUL = "\x00"
# A number of 19 digits sends the body through the exact (stdlib) JSON reader, which, unlike
# orjson, accepted the escape of a lone surrogate.
LONG = 1234567890123456789
LONE = '"\\ud800"'


def _body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        (tosca("p1", policy_type=f"onap{NUL}type"), "policies[0].type"),
        (tosca("p1", type_version=f"1{NUL}"), "policies[0].type_version"),
        (
            {**tosca("p1"), "metadata": {"policy-id": "p1", "policy-version": f"1{NUL}"}},
            "policies[0].metadata.policy-version",
        ),
        ({"type": "t", "name": "p1", "version": f"{NUL}"}, "policies[0].version"),
    ],
)
async def test_nul_in_a_stored_policy_string_is_a_400(
    server: LiveServer, client: httpx.AsyncClient, policy: dict[str, Any], field: str
) -> None:
    """A NUL character in a policy's type, type_version or version (which PostgreSQL text
    cannot hold, and which gave a 503 "store unavailable") is a 400 naming the field.
    """
    before = await state(client, server)
    r = await client.post(POLICIES, content=_body(policies=[policy]))
    body = assert_onap_error(r, 400, field)
    assert "NUL" in body["error"]
    update = await client.post(PDP_UPDATE, content=_body(policiesToBeDeployed=[policy]))
    assert_onap_error(update, 400, field.replace("policies[0]", "policiesToBeDeployed[0]"))
    assert await state(client, server) == before


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (POLICIES, f'{{"policies": [{{"type": {LONE}, "name": "p1", "version": {LONG}}}]}}'),
        (
            POLICIES,
            f'{{"policies": [{{"type": "t", "name": "p1", "version": "1", '
            f'"properties": {{{LONE}: {LONG}}}}}]}}',
        ),
        (PDP_UPDATE, f'{{"policies": [], "name": {LONE}, "timestampMs": {LONG}}}'),
        (
            f"{SUBSCRIPTIONS}/s1",
            f'{{"subscriber_topic": "t1", "policy-filters": [{{"policy-id": "a"}}], '
            f'"ONAPName": {LONE}, "ONAPInstance": "{LONG}"}}',
        ),
        ("/events/t1", f'{{"n": {LONG}, "s": [{LONE}]}}'),
    ],
)
async def test_lone_surrogate_beside_a_long_number_is_a_400(
    server: LiveServer, client: httpx.AsyncClient, path: str, body: str
) -> None:
    """A lone surrogate escape in a body that also holds a 19-digit number (which the exact
    JSON reader accepted, and no UTF-8 encoder could write: a 500) is a 400, nothing changed.
    """
    before = await state(client, server)
    r = await client.post(path, content=body.encode(), headers={"content-type": "application/json"})
    if path.startswith("/events"):
        assert_dmaap_error(r, 400)
        assert "surrogates" in r.json()["message"]
    else:
        assert "surrogates" in assert_onap_error(r, 400)["error"]
    assert await state(client, server) == before
