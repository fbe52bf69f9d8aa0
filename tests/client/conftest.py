"""Fixtures of the SDK tests: a live server (one store is enough: the SDK speaks HTTP) and
subscribers with tiny delays, so that retries and resyncs take milliseconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from policy_pubsub.client import PolicyChange, PolicySubscriber, Timings
from policy_pubsub.config import Settings
from tests.conftest import make_settings

TOPIC = "policies_DCAE_tca_tca-1"
SUBSCRIBER = "tca-1"
TCA_FILTERS = [{"policy-id": "onap.*"}]
CHANGE_TIMEOUT = 10.0

# Fast but not zero: a failing request is retried every few milliseconds, not in a hot loop.
FAST = Timings(
    backoff_initial=0.01,
    backoff_max=0.05,
    request_timeout=5.0,
    poll_timeout=5.0,
    resync_interval=0,
)


def fast(**changes: Any) -> Timings:
    """``FAST`` with some values changed, e.g. ``fast(poll_timeout=30)``."""
    return dataclasses.replace(FAST, **changes)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """One store is enough: the SDK is a client of the HTTP API."""
    return make_settings(tmp_path)


def subscriber(url: str, **options: Any) -> PolicySubscriber:
    """A tca-1 subscriber for ``onap.*`` with fast retries and no periodic resync."""
    values: dict[str, Any] = {
        "subscriber_id": SUBSCRIBER,
        "subscriber_topic": TOPIC,
        "policy_filters": TCA_FILTERS,
        "onap_name": "DCAE",
        "onap_component": "tca",
        "onap_instance": "tca-1",
        "timings": FAST,
        **options,
    }
    return PolicySubscriber(url, **values)


async def next_change(
    changes: AsyncIterator[PolicyChange], timeout: float = CHANGE_TIMEOUT
) -> PolicyChange:
    """The iterator's next change; fail the test if none comes within ``timeout``."""
    try:
        return await asyncio.wait_for(anext(changes), timeout)
    except TimeoutError:
        pytest.fail(f"no change within {timeout} s")


async def no_change(changes: AsyncIterator[PolicyChange], within: float = 0.3) -> None:
    """Nothing arrives within ``within`` seconds (the iterator is spent afterwards)."""
    try:
        change = await asyncio.wait_for(anext(changes), within)
    except TimeoutError:
        return
    pytest.fail(f"unexpected change {change}")


def ids(policies: Any) -> list[str]:
    return sorted(policies)


async def raw_publish(http: httpx.AsyncClient, topic: str, *messages: dict[str, Any]) -> None:
    """Put messages on a topic as any publisher could (``POST /events/{topic}``)."""
    answer = await http.post(f"/events/{topic}", json=list(messages))
    assert answer.status_code == 200, answer.text


async def group_lag(http: httpx.AsyncClient, topic: str, group: str) -> int | None:
    """How many messages the consumer group has not read yet (None: it never read)."""
    answer = await http.get(f"/topics/{topic}")
    assert answer.status_code == 200, answer.text
    for found in answer.json()["consumer_groups"]:
        if found["name"] == group:
            lag: int = found["lag"]
            return lag
    return None


class RecordingTransport(httpx.AsyncBaseTransport):
    """A real HTTP transport that records each request's outcome and counts held polls."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.log: list[tuple[str, str, str]] = []  # (method, path, status or exception name)
        self.polls_in_flight = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        poll = request.method == "GET" and request.url.path.startswith("/events/")
        self.polls_in_flight += poll
        try:
            response = await self._inner.handle_async_request(request)
        except Exception as exc:
            self.log.append((request.method, request.url.path, type(exc).__name__))
            raise
        finally:
            self.polls_in_flight -= poll
        self.log.append((request.method, request.url.path, str(response.status_code)))
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()

    def since(self, index: int) -> list[tuple[str, str, str]]:
        return self.log[index:]
