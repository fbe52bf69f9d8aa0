"""Limits under abuse: each cap answers its documented status, shape and headers, logs a
WARNING, and leaves the store as it was.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from policy_pubsub import constants
from policy_pubsub.api import limits as limits_module
from policy_pubsub.api.errors import ApiError
from policy_pubsub.api.limits import Limits
from policy_pubsub.config import Settings
from policy_pubsub.models import MAX_FILTERS
from policy_pubsub.testing import start_server, stop_server
from tests.conftest import make_settings, wait_for

LIMITS_LOGGER = "policy_pubsub.api.limits"


@asynccontextmanager
async def serving(tmp_path: Path, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    live, task = await start_server(make_settings(tmp_path, **overrides))
    try:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
            yield http
    finally:
        await stop_server(live, task)


def policy(policy_id: str) -> dict[str, Any]:
    return {
        "type": "onap.test",
        "name": policy_id,
        "version": "1.0.0",
        "metadata": {"policy-id": policy_id, "policy-version": "1.0.0"},
    }


def refusals(caplog: pytest.LogCaptureFixture, limit: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == LIMITS_LOGGER
        and r.levelno == logging.WARNING
        and f"limit {limit}" in r.getMessage()
    ]


def assert_onap_400(r: httpx.Response, field: str, limit: int) -> None:
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["code"] == "BAD_REQUEST"
    assert body["error"].startswith(f"{field}: ")
    assert f"limit of {limit}" in body["error"]
    assert body["details"][0]["field"] == field


async def test_a_push_with_too_many_policies_is_refused_and_changes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A push (or a PDP_UPDATE list) over max_policies_per_push is a 400 naming the field and
    the limit, logged, and no policy is deployed.
    """
    caplog.set_level(logging.WARNING, logger=LIMITS_LOGGER)
    async with serving(tmp_path, max_policies_per_push=2) as http:
        three = [policy(f"p{i}") for i in range(3)]
        assert_onap_400(
            await http.post("/pap/v1/policies", json={"policies": three}), "policies", 2
        )
        update = {"messageName": "PDP_UPDATE", "policiesToBeDeployed": three}
        r = await http.post("/pap/v1/pdp-update", json=update)
        assert_onap_400(r, "policiesToBeDeployed", 2)
        assert (await http.get("/pap/v1/policies")).json() == {"policies": []}
        ok = await http.post("/pap/v1/policies", json={"policies": three[:2]})
        assert ok.status_code == 200 and ok.json()["revision"] == 1
    assert len(refusals(caplog, "policies_per_push")) == 2


async def test_too_many_filters_or_ids_are_refused_and_change_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A subscription or decision over max_filters_per_subscription filters, or with a filter
    over max_ids_per_filter ids, is a 400 naming the field and the limit; no subscription is
    stored and no revision taken.
    """
    caplog.set_level(logging.WARNING, logger=LIMITS_LOGGER)
    overrides = {"max_filters_per_subscription": 2, "max_ids_per_filter": 3}
    async with serving(tmp_path, **overrides) as http:
        many_filters = [{"policy-id": f"p{i}"} for i in range(3)]
        many_ids = [{"policy-id": "a"}, {"policy-type": ["t1", "t2", "t3", "t4"]}]
        url = "/decision/v1/subscription/s1"
        r = await http.post(url, json={"subscriber_topic": "t", "policy-filters": many_filters})
        assert_onap_400(r, "policy-filters", 2)
        r = await http.post(url, json={"subscriber_topic": "t", "policy-filters": many_ids})
        assert_onap_400(r, "policy-filters[1].policy-type", 3)
        assert (await http.get(url)).status_code == 404
        assert (await http.get("/topics")).json() == {"topics": []}
        r = await http.post("/decision/v1", json={"policy-filters": many_filters})
        assert_onap_400(r, "policy-filters", 2)
        resource = {"policy-id": ["a", "b", "c", "d"]}
        r = await http.post("/policy/pdpx/v1/decision", json={"resource": resource})
        assert_onap_400(r, "resource.policy-id", 3)
        within = {"subscriber_topic": "t", "policy-filters": many_filters[:2]}
        created = await http.post(url, json=within)
        assert created.status_code == 201 and created.json()["revision"] == 1
    assert len(refusals(caplog, "filters_per_subscription")) == 2
    assert len(refusals(caplog, "ids_per_filter")) == 2


async def test_an_oversized_message_is_refused_in_the_dmaap_shape(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A published message over max_message_bytes is a 413 in the DMaaP shape, logged, and
    none of the request's messages is stored (the topic is not even created).
    """
    caplog.set_level(logging.WARNING, logger=LIMITS_LOGGER)
    async with serving(tmp_path, max_message_bytes=100) as http:
        batch = [{"small": 1}, {"big": "x" * 200}]
        r = await http.post("/events/t", json=batch)
        assert r.status_code == 413, r.text
        body = r.json()
        assert set(body) == {"status", "mrstatus", "message"}
        assert body["status"] == 413
        assert "Message 1 is" in body["message"] and "limit of 100 bytes" in body["message"]
        assert (await http.get("/topics/t")).status_code == 404
        assert (await http.post("/events/t", json=batch[:1])).json()["count"] == 1
    assert len(refusals(caplog, "message_bytes")) == 1


async def test_long_polls_past_the_server_limit_get_503_with_retry_after(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With max_held_polls long-polls held, one more is a 503 in the DMaaP shape with
    Retry-After, logged, and consumes nothing; once the held one is answered polls pass again.
    """
    caplog.set_level(logging.WARNING, logger=LIMITS_LOGGER)
    async with serving(tmp_path, max_held_polls=1) as http:
        assert (await http.post("/events/t", json={"n": 0})).status_code == 200
        assert len((await http.get("/events/t/g1/c", params={"timeout": 0})).json()) == 1
        held = asyncio.create_task(http.get("/events/t/g1/c", params={"timeout": 20000}))
        await wait_for(lambda: _active(http, 1))
        refused = await http.get("/events/t/g2/c", params={"timeout": 0})
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"].isdigit()
        body = refused.json()
        assert (body["status"], body["mrstatus"]) == (503, constants.MR_STATUS_UNAVAILABLE)
        assert "max_held_polls" in body["message"]
        assert (await http.post("/events/t", json={"n": 1})).status_code == 200
        assert len((await asyncio.wait_for(held, 10)).json()) == 1
        # g2 was refused before reading: both messages are still there for it.
        again = await http.get("/events/t/g2/c", params={"timeout": 0})
        assert again.status_code == 200 and len(again.json()) == 2
    assert len(refusals(caplog, "held_polls")) == 1


async def test_long_polls_past_the_group_limit_get_503_other_groups_pass(
    tmp_path: Path,
) -> None:
    """With max_held_polls_per_group held for one consumer group, one more for that group is
    a 503 with Retry-After, while another group of the same topic is still served.
    """
    async with serving(tmp_path, max_held_polls_per_group=1) as http:
        assert (await http.post("/events/t", json={"n": 0})).status_code == 200
        assert len((await http.get("/events/t/g1/c1", params={"timeout": 0})).json()) == 1
        held = asyncio.create_task(http.get("/events/t/g1/c1", params={"timeout": 20000}))
        await wait_for(lambda: _active(http, 1))
        refused = await http.get("/events/t/g1/c2", params={"timeout": 0})
        assert refused.status_code == 503 and "Retry-After" in refused.headers
        assert "max_held_polls_per_group" in refused.json()["message"]
        other = await http.get("/events/t/g2/c1", params={"timeout": 0})
        assert other.status_code == 200 and len(other.json()) == 1
        assert (await http.post("/events/t", json={"n": 1})).status_code == 200
        assert len((await asyncio.wait_for(held, 10)).json()) == 1


async def test_many_empty_polls_get_429_in_the_dmaap_shape_and_lose_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A consumer past max_empty_polls_per_minute empty polls gets 429 with Retry-After and
    DMaaP's mrstatus 5012, logged; a message published meanwhile is not consumed by the
    refused poll and reaches another consumer of the group.
    """
    caplog.set_level(logging.WARNING, logger=LIMITS_LOGGER)
    async with serving(tmp_path, max_empty_polls_per_minute=3) as http:
        assert (await http.post("/events/t", json={"n": 0})).status_code == 200
        assert len((await http.get("/events/t/g/c1", params={"timeout": 0})).json()) == 1
        for _ in range(3):
            r = await http.get("/events/t/g/c1", params={"timeout": 0})
            assert (r.status_code, r.json()) == (200, [])
        assert (await http.post("/events/t", json={"n": 1})).status_code == 200
        refused = await http.get("/events/t/g/c1", params={"timeout": 0})
        assert refused.status_code == 429, refused.text
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        body = refused.json()
        assert (body["status"], body["mrstatus"]) == (429, 5012)
        assert "too many requests" in body["message"]
        other = await http.get("/events/t/g/c2", params={"timeout": 0})
        assert other.json() == ['{"n":1}']
    assert len(refusals(caplog, "empty_polls")) == 1


async def test_the_poll_timeout_is_clamped_into_the_server_bounds(tmp_path: Path) -> None:
    """A long-poll asking less than min_poll_timeout_ms is held at least that long, and one
    asking more than max_poll_timeout_ms answers [] well before what it asked.
    """
    async with serving(tmp_path, min_poll_timeout_ms=300, max_poll_timeout_ms=400) as http:
        assert (await http.post("/events/t", json={"n": 0})).status_code == 200
        assert len((await http.get("/events/t/g/c", params={"timeout": 0})).json()) == 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        r = await http.get("/events/t/g/c", params={"timeout": 0})
        assert r.json() == [] and loop.time() - started >= 0.3
        long = await asyncio.wait_for(
            http.get("/events/t/g/c", params={"timeout": 60000}), timeout=20
        )
        assert long.json() == []


async def _active(http: httpx.AsyncClient, expected: int) -> bool:
    text = (await http.get("/metrics")).text
    return f"policy_pubsub_long_polls_active {float(expected)}" in text


# -- the limiter itself, on a fake clock ----------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _limiter(clock: Clock, **overrides: Any) -> Limits:
    return Limits(Settings(**{"max_empty_polls_per_minute": 2, **overrides}), clock=clock)


def test_the_empty_poll_window_resets_after_a_minute_and_on_a_delivery() -> None:
    """Past the cap a consumer is refused until its minute is over; a reply with messages
    resets its count at once.
    """
    clock = Clock()
    limits = _limiter(clock)
    for _ in range(2):
        limits.admit_poll("t", "g", "c")()
        limits.answered("t", "g", "c", 0)
    with pytest.raises(ApiError) as refused:
        limits.admit_poll("t", "g", "c")
    assert refused.value.status == 429 and refused.value.headers == {"Retry-After": "60"}
    clock.now += 59.5
    with pytest.raises(ApiError) as still:
        limits.admit_poll("t", "g", "c")
    assert still.value.headers == {"Retry-After": "1"}
    clock.now += 0.5
    limits.admit_poll("t", "g", "c")()
    limits.answered("t", "g", "c", 0)
    limits.answered("t", "g", "c", 0)
    with pytest.raises(ApiError):
        limits.admit_poll("t", "g", "c")
    limits.answered("t", "g", "c", 1)
    limits.admit_poll("t", "g", "c")()


def test_the_empty_poll_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Consumers not seen for a minute are pruned, and no more than MAX_TRACKED_CONSUMERS
    are ever counted at once.
    """
    monkeypatch.setattr(limits_module, "MAX_TRACKED_CONSUMERS", 10)
    clock = Clock()
    limits = _limiter(clock)
    for n in range(25):
        limits.answered("t", "g", f"c{n}", 0)
    assert limits.tracked_consumers == 10
    clock.now += 61
    limits.answered("t", "g", "late", 0)
    assert limits.tracked_consumers == 1


def test_a_released_poll_frees_its_place_once() -> None:
    """Releasing a poll twice frees one place only, so the counts never go negative."""
    limits = _limiter(Clock(), max_held_polls=1)
    release = limits.admit_poll("t", "g", "c")
    release()
    release()
    assert limits.active_polls == 0
    limits.admit_poll("t", "g", "c")
    with pytest.raises(ApiError):
        limits.admit_poll("t", "g2", "c")


def test_settings_refuse_caps_beyond_the_models_and_inverted_poll_bounds() -> None:
    """A cap above the model's safety net, or a minimum poll timeout above the maximum, is a
    settings error, so serve refuses to start rather than misbehave.
    """
    with pytest.raises(ValidationError):
        Settings(max_filters_per_subscription=MAX_FILTERS + 1)
    with pytest.raises(ValidationError):
        Settings(min_poll_timeout_ms=5000, max_poll_timeout_ms=1000)
