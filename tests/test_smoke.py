from __future__ import annotations

import httpx

from tests.conftest import load_policy


async def test_subscribe_push_poll(client: httpx.AsyncClient) -> None:
    """A subscriber's topic carries a snapshot with a policy pushed after it subscribed."""
    r = await client.post(
        "/decision/v1/subscription/tca-1",
        json={"subscriber_topic": "t1", "policy-filters": [{"policy-id": "onap.restart.tca"}]},
    )
    assert r.status_code == 201, r.text
    r = await client.post("/pap/v1/policies", json={"policies": [load_policy("onap.restart.tca")]})
    assert r.json()["notified"] == 1
    r = await client.get("/events/t1/g/c", params={"timeout": 1000})
    assert len(r.json()) == 2
