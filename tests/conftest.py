"""Fixtures: real servers on free loopback ports, on fresh SQLite files or PostgreSQL databases."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from policy_pubsub.config import Settings
from policy_pubsub.testing import LiveServer, start_server, stop_server

# The NATS and RabbitMQ fixtures, for every test module.
pytest_plugins = ["tests.nats_server", "tests.rabbitmq"]

POLICIES = Path(__file__).resolve().parents[1] / "examples" / "policies"


def load_policy(name: str) -> dict[str, Any]:
    """A sample ONAP policy or message from examples/policies (e.g. ``onap.restart.tca``)."""
    data: dict[str, Any] = json.loads((POLICIES / f"{name}.json").read_text())
    return data


async def wait_for(
    condition: Callable[[], Awaitable[bool] | bool], *, timeout: float = 5.0, every: float = 0.01
) -> None:
    """Return once ``condition()`` is true; fail the test if it is not within ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        await asyncio.sleep(every)


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'store.db'}",
        "position_flush_seconds": 0.05,
        "maintenance_interval_seconds": 3600,
        "log_level": "warning",
        **overrides,
    }
    return Settings(**values)


POSTGRES_URL = os.environ.get(
    "POLICY_PUBSUB_TEST_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A new, empty PostgreSQL database on the machine's server, dropped afterwards; its URL.

    Skips the test when PostgreSQL is not reachable, unless running in CI.
    """
    import asyncpg  # type: ignore[import-untyped]

    base = make_url(POSTGRES_URL)
    dsn = base.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        admin = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL is not reachable at {base.render_as_string()}: {exc}")
    name = f"pp_test_{uuid.uuid4().hex[:16]}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def settings(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Settings]:
    """Server settings on each store: a SQLite file, and a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield make_settings(tmp_path)
        return
    async with postgres_database() as url:
        yield make_settings(tmp_path, database_url=url)


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[LiveServer]:
    live, task = await start_server(settings)
    try:
        yield live
    finally:
        await stop_server(live, task)


@pytest.fixture
async def client(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        yield http
