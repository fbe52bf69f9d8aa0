"""In-process policy-pubsub servers for tests, yours and ours.

A component author tests against the real server, not a mock:

```python
from policy_pubsub.client import PolicySubscriber
from policy_pubsub.testing import running_server

async def test_my_component_gets_its_policies() -> None:
    async with running_server() as url:
        async with PolicySubscriber(url, subscriber_id="me", ...) as subscriber:
            ...
```

``running_server`` starts the server in the running event loop (uvicorn on a free loopback
port, a fresh SQLite file in a temporary directory, the embedded router) and stops it on the
way out. ``start_server``/``stop_server`` do the same in two steps and give the app too.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette

from policy_pubsub.api.state import AppState, app_state
from policy_pubsub.config import Settings
from policy_pubsub.server import Server, build_server

START_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0


@dataclass
class LiveServer:
    """A running server: its URL, its app (for looking inside), and its uvicorn server."""

    url: str
    app: Starlette
    server: Server
    settings: Settings

    @property
    def state(self) -> AppState:
        """The app's state: its store, router, service, metrics and limits."""
        return app_state(self.app)


async def start_server(settings: Settings, **options: Any) -> tuple[LiveServer, asyncio.Task[None]]:
    """Start a server with ``settings`` in this event loop; return once it accepts requests.
    Stop it with ``stop_server`` (``RuntimeError`` if it does not start). ``options`` go to
    :func:`policy_pubsub.server.build_server`.
    """
    server = build_server(settings, **options)
    task = asyncio.create_task(server.serve())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT
    while not (server.started or task.done()):
        if loop.time() > deadline:
            server.should_exit = True
            await asyncio.wait_for(task, STOP_TIMEOUT)
            raise RuntimeError(f"the server did not start within {START_TIMEOUT} s")
        await asyncio.sleep(0.01)
    if task.done():
        task.result()
        raise RuntimeError("the server stopped during start-up")
    live = LiveServer(f"http://127.0.0.1:{server.port}", server.app, server, settings)
    return live, task


async def stop_server(live: LiveServer, task: asyncio.Task[None]) -> None:
    """Stop a server from ``start_server``: held long-polls are answered, the store closed."""
    live.server.should_exit = True
    await asyncio.wait_for(task, timeout=STOP_TIMEOUT)


def server_settings(directory: str | Path, **overrides: Any) -> Settings:
    """Settings for a test server: a free loopback port, ``store.db`` in ``directory``,
    quick consumer-position flushes, warnings-only logging; ``overrides`` win.
    """
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "database_url": f"sqlite+aiosqlite:///{Path(directory) / 'store.db'}",
        "position_flush_seconds": 0.05,
        "maintenance_interval_seconds": 3600,
        "log_level": "warning",
        **overrides,
    }
    return Settings(**values)


@asynccontextmanager
async def running_server(
    directory: str | Path | None = None, **overrides: Any
) -> AsyncIterator[str]:
    """A real server for the duration of the block; yields its URL (``http://127.0.0.1:N``).

    Its SQLite file lives in ``directory`` (a fresh temporary one by default, removed
    afterwards); ``overrides`` are ``Settings`` fields, e.g. ``max_poll_timeout_ms=2000``.
    """
    with tempfile.TemporaryDirectory(prefix="policy-pubsub-") as scratch:
        live, task = await start_server(server_settings(directory or scratch, **overrides))
        try:
            yield live.url
        finally:
            await stop_server(live, task)
