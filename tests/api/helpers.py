"""Helpers of the end-to-end API tests: requests, long-polls and answer checks."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import httpx
import orjson

from policy_pubsub.routers.embedded import EmbeddedRouter
from tests.conftest import LiveServer, wait_for

SUBSCRIPTIONS = "/decision/v1/subscription"
POLICIES = "/pap/v1/policies"
PDP_UPDATE = "/pap/v1/pdp-update"
DECISION_PATHS = ("/policy/pdpx/v1/decision", "/decision/v1")
TCA_TYPE = "onap.policies.monitoring.tcagen2"

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

SNAPSHOT_KEYS = {
    "subscriber_id",
    "subscriber_topic",
    "action",
    "ONAPName",
    "ONAPComponent",
    "ONAPInstance",
    "policy-filters",
    "revision",
    "event",
    "timestamp",
    "policies",
}

ONAP_CODES = {
    400: "BAD_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}
MR_STATUS = {400: 3002, 404: 3001, 405: 3002, 413: 3002, 415: 3002}


def tosca(
    policy_id: str,
    version: str | int = "1.0.0",
    policy_type: str = TCA_TYPE,
    **extra: Any,
) -> dict[str, Any]:
    """A small ToscaPolicy with the given identity."""
    return {
        "type": policy_type,
        "type_version": "1.0.0",
        "properties": {"threshold": 1},
        "name": policy_id,
        "version": version,
        "metadata": {"policy-id": policy_id, "policy-version": version},
        **extra,
    }


def subscription(topic: str, filters: Sequence[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """A subscription request body."""
    return {"subscriber_topic": topic, "policy-filters": list(filters), **fields}


async def subscribe(
    client: httpx.AsyncClient,
    subscriber_id: str,
    topic: str,
    filters: Sequence[dict[str, Any]],
    *,
    expect: int = 201,
    **fields: Any,
) -> dict[str, Any]:
    """Insert or update a subscription; checks the status and returns the answer."""
    r = await client.post(
        f"{SUBSCRIPTIONS}/{subscriber_id}", json=subscription(topic, filters, **fields)
    )
    assert r.status_code == expect, r.text
    answer: dict[str, Any] = r.json()
    return answer


async def push(client: httpx.AsyncClient, *policies: dict[str, Any]) -> dict[str, Any]:
    """Deploy policies through ``POST /pap/v1/policies``; returns the 200 answer."""
    r = await client.post(POLICIES, json={"policies": list(policies)})
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


async def undeploy(client: httpx.AsyncClient, policy_id: str) -> dict[str, Any]:
    """Undeploy one policy through ``DELETE /pap/v1/policies/{id}``; returns the 200 answer."""
    r = await client.delete(f"{POLICIES}/{policy_id}")
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


async def poll(
    client: httpx.AsyncClient,
    topic: str,
    group: str = "g",
    *,
    timeout_ms: int = 2000,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """One long-poll of a topic for a consumer group, each message parsed."""
    r = await client.get(
        f"/events/{topic}/{group}/c1", params={"timeout": timeout_ms, "limit": limit}
    )
    assert r.status_code == 200, r.text
    texts = r.json()
    assert isinstance(texts, list)
    assert all(isinstance(text, str) for text in texts), texts
    return [orjson.loads(text) for text in texts]


async def assert_no_message(client: httpx.AsyncClient, topic: str, group: str = "g") -> None:
    """Nothing new on the topic for the group: a short long-poll answers ``[]``."""
    assert await poll(client, topic, group, timeout_ms=300) == []


def of(snapshots: Sequence[dict[str, Any]], subscriber_id: str) -> list[dict[str, Any]]:
    """The snapshots of one subscriber, in topic order."""
    return [s for s in snapshots if s["subscriber_id"] == subscriber_id]


def check_snapshot(
    snapshot: dict[str, Any], record: dict[str, Any], event: str, policies: dict[str, Any]
) -> None:
    """A snapshot carries every subscription field, its event, a timestamp and the policies."""
    assert set(snapshot) == SNAPSHOT_KEYS
    for key in SNAPSHOT_KEYS - {"revision", "event", "timestamp", "policies"}:
        assert snapshot[key] == record[key], key
    assert snapshot["event"] == event
    assert isinstance(snapshot["revision"], int)
    assert RFC3339.match(snapshot["timestamp"]), snapshot["timestamp"]
    assert snapshot["policies"] == policies


def router(server: LiveServer) -> EmbeddedRouter:
    """The server's embedded router (for ``held_reads``)."""
    found: EmbeddedRouter = server.state.router
    return found


def revision(server: LiveServer) -> int:
    """The store revision the server has committed."""
    value: int = server.state.service.revision
    return value


def assert_onap_error(
    r: httpx.Response, status: int, field: str | None = None, error: str | None = None
) -> dict[str, Any]:
    """An ONAP-shaped error: the status, ``code``, an ``error`` naming ``field``, ``details``."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = r.json()
    assert set(body) == {"code", "error", "details"}, body
    assert body["code"] == ONAP_CODES[status]
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["details"], list)
    if field is not None:
        assert body["error"].startswith(f"{field}: "), body["error"]
    if error is not None:
        assert body["error"] == error
    return body


def assert_field_detail(body: dict[str, Any], field: str) -> None:
    """``details`` names the bad field."""
    assert field in [d["field"] for d in body["details"]], body["details"]
    assert all(isinstance(d["message"], str) and d["message"] for d in body["details"])


def assert_dmaap_error(r: httpx.Response, status: int, message: str | None = None) -> None:
    """A DMaaP-shaped error: ``{"status", "mrstatus", "message"}``."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"status", "mrstatus", "message"}, body
    assert body["status"] == status
    assert body["mrstatus"] == MR_STATUS[status]
    assert isinstance(body["message"], str) and body["message"]
    if message is not None:
        assert body["message"] == message


async def state(client: httpx.AsyncClient, server: LiveServer) -> dict[str, Any]:
    """Everything a failed request must leave as it was: revision, policies, subscriptions,
    topics and their message counts.
    """
    policies = (await client.get(POLICIES)).json()
    bodies = {
        p["policy-id"]: (await client.get(f"{POLICIES}/{p['policy-id']}")).json()
        for p in policies["policies"]
    }
    subscriptions = (await client.get(SUBSCRIPTIONS)).json()
    topics = (await client.get("/topics")).json()["topics"]
    details = {t: (await client.get(f"/topics/{t}")).json() for t in topics}
    return {
        "revision": revision(server),
        "policies": policies,
        "bodies": bodies,
        "subscriptions": subscriptions,
        "topics": details,
    }


async def wait_held(server: LiveServer, count: int) -> None:
    """Return once ``count`` long-polls are held by the router."""
    await wait_for(lambda: router(server).held_reads == count)
