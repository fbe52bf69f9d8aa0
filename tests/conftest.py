"""Fixtures: a real server on a free loopback port, backed by a fresh SQLite file."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from policy_pubsub.config import Settings
from policy_pubsub.server import Server, build_server

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


@dataclass
class LiveServer:
    """A running server: its URL, its app (for looking inside), and its uvicorn server."""

    url: str
    app: Starlette
    server: Server
    settings: Settings


async def start_server(settings: Settings) -> tuple[LiveServer, asyncio.Task[None]]:
    server = build_server(settings)
    task = asyncio.create_task(server.serve())
    await wait_for(lambda: server.started or task.done(), timeout=15)
    if task.done():
        task.result()
        pytest.fail("the server stopped during start-up")
    live = LiveServer(f"http://127.0.0.1:{server.port}", server.app, server, settings)
    return live, task


async def stop_server(live: LiveServer, task: asyncio.Task[None]) -> None:
    live.server.should_exit = True
    await asyncio.wait_for(task, timeout=15)


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


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


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
