"""Fixtures for the service core, driven without HTTP: a real store (SQLite, and PostgreSQL),
and a recording outlet in place of the router.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import orjson
import pytest

from policy_pubsub.config import Settings
from policy_pubsub.metrics import Metrics
from policy_pubsub.models import SubscriptionRequest, ToscaPolicy
from policy_pubsub.routers import OutMessage
from policy_pubsub.routers.embedded import EmbeddedRouter
from policy_pubsub.service import Outlet, PolicyService, Written
from policy_pubsub.store import Store, WriteTx
from tests.api import helpers
from tests.api.helpers import TCA_TYPE


class RecordingOutlet(Outlet):
    """Keeps what the service writes in each transaction, and what it hands on after a
    commit (a rolled-back transaction's messages are written but never handed on).
    """

    def __init__(self) -> None:
        self.writes: list[list[OutMessage]] = []
        self.handed_on: list[list[OutMessage]] = []

    async def write(self, tx: WriteTx, messages: Sequence[OutMessage], at: int) -> Written:
        self.writes.append(list(messages))
        return Written(list(messages))

    def after_commit(self, written: Written) -> None:
        self.handed_on.append(list(written.messages))

    def snapshots(self) -> list[dict[str, Any]]:
        """Every snapshot handed on, parsed, in order."""
        return [orjson.loads(m.body) for batch in self.handed_on for m in batch]

    def clear(self) -> None:
        self.writes.clear()
        self.handed_on.clear()


def tosca(
    policy_id: str, version: str = "1.0.0", policy_type: str = TCA_TYPE, *, padding: int = 0
) -> ToscaPolicy:
    """A small ToscaPolicy with the given identity, as the PAP would push it; ``padding``
    characters more in its properties make it that much larger.
    """
    body = helpers.tosca(policy_id, version, policy_type)
    if padding:
        body["properties"] = {"threshold": 1, "padding": "x" * padding}
    return ToscaPolicy.model_validate(body)


def request(topic: str, *filters: dict[str, Any]) -> SubscriptionRequest:
    """A subscription request on ``topic`` with the given policy filters."""
    return SubscriptionRequest.model_validate(
        {"subscriber_topic": topic, "ONAPName": "DCAE", "policy-filters": list(filters)}
    )


def embedded_router(store: Store, max_message_bytes: int = 1024 * 1024) -> EmbeddedRouter:
    """An embedded router over the store, not started, carrying at most ``max_message_bytes``."""
    return EmbeddedRouter(
        store,
        retention_seconds=3600,
        maintenance_interval_seconds=3600,
        position_flush_seconds=0.05,
        max_message_bytes=max_message_bytes,
    )


async def open_service(
    store: Store,
    outlet: Outlet,
    metrics: Metrics | None = None,
    *,
    max_message_bytes: int = 1024 * 1024,
) -> PolicyService:
    """A started service over the store. Its router only answers delivery statistics, which
    these tests do not ask for, and its largest message; it is never started.
    """
    router = embedded_router(store, max_message_bytes)
    service = PolicyService(store, router, outlet, metrics=metrics or Metrics())
    await service.start()
    return service


OpenStore = Callable[[], Awaitable[Store]]


@pytest.fixture
async def open_store(settings: Settings) -> AsyncIterator[OpenStore]:
    """Opens stores on the test's database (each its own engines, as another process would
    have), and closes them at the end.
    """
    opened: list[Store] = []

    async def open_one() -> Store:
        store = Store(settings.database_url)
        await store.open()
        opened.append(store)
        return store

    try:
        yield open_one
    finally:
        for store in reversed(opened):
            await store.close()


@pytest.fixture
async def store(open_store: OpenStore) -> Store:
    return await open_store()


@pytest.fixture
def outlet() -> RecordingOutlet:
    return RecordingOutlet()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def service(store: Store, outlet: RecordingOutlet, metrics: Metrics) -> PolicyService:
    return await open_service(store, outlet, metrics)
