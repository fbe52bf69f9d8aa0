"""Fixtures and helpers for tests that need NATS JetStream, loaded for every test through
``pytest_plugins`` in tests/conftest.py.

The shared server is the one on 127.0.0.1:4222 (``POLICY_PUBSUB_TEST_NATS_URL``); each test
gets a stream of its own, deleted at the end. Tests of outages get a private nats-server on a
free port (:class:`PrivateNats`), stopped by its pid. Without a server the tests are skipped,
except in CI, where that is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
import pytest

from policy_pubsub.exceptions import RouterUnavailable
from policy_pubsub.routers.nats import NatsRouter
from policy_pubsub.store import Store
from tests.conftest import wait_for
from tests.processes import free_port

NATS_URL = os.environ.get("POLICY_PUBSUB_TEST_NATS_URL", "nats://127.0.0.1:4222")
NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def skip_unless_ci(reason: str) -> None:
    """Skip for a missing service on a developer's machine; in CI (``CI`` set) fail instead."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
    pytest.skip(reason)


class DisposableNatsRouter(NatsRouter):
    """A router whose close() also deletes its stream, so tests leave nothing behind."""

    def __init__(self, url: str, store: Store, **options: Any) -> None:
        super().__init__(url, store, **options)
        self.nats_url = url

    async def close(self) -> None:
        await super().close()
        with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
            await delete_stream(self.nats_url, self.stream)


async def delete_stream(url: str, stream: str) -> None:
    """Delete a stream if it exists."""
    nc = await nats.connect(url, allow_reconnect=False, connect_timeout=2)
    try:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


def unique_stream() -> str:
    """A stream name no other test uses."""
    return f"PPS_TEST_{uuid.uuid4().hex[:16]}"


async def open_nats_router(
    tmp_path: Path,
    *,
    url: str = NATS_URL,
    stream: str | None = None,
    database: str = "router.db",
    keep_stream: bool = False,
    **options: Any,
) -> tuple[NatsRouter, Store]:
    """A started router on a fresh stream (or ``stream``) and a SQLite store in ``tmp_path``;
    its close() deletes the stream unless ``keep_stream``. Skipped when the NATS server is
    unreachable outside CI.
    """
    store = Store(f"sqlite+aiosqlite:///{tmp_path / database}")
    await store.open()
    settings: dict[str, Any] = {
        "max_age_seconds": 3600,
        "position_flush_seconds": 0.01,
        "request_timeout": 2.0,
        "reconnect_wait": 0.1,
        **options,
    }
    kind = NatsRouter if keep_stream else DisposableNatsRouter
    router = kind(url, store, stream=stream or unique_stream(), **settings)
    try:
        await router.start()
    except RouterUnavailable as exc:
        await store.close()
        skip_unless_ci(f"no NATS JetStream at {url}: {exc.message}")
    return router, store


@pytest.fixture
async def nats_router(tmp_path: Path) -> AsyncIterator[NatsRouter]:
    """A started router on a stream of its own on the shared NATS server, deleted after."""
    router, store = await open_nats_router(tmp_path)
    try:
        yield router
    finally:
        await router.close()
        await store.close()


class PrivateNats:
    """A nats-server with JetStream on a free loopback port and its own store directory;
    with ``max_payload``, its largest message is that many bytes (a config file next to the
    store directory says so: the server has no flag for it).
    """

    def __init__(self, store_dir: Path, *, max_payload: int | None = None) -> None:
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self._store_dir = store_dir
        self._max_payload = max_payload
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        options = ["-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self._store_dir)]
        if self._max_payload is not None:
            config = self._store_dir.with_name(f"{self._store_dir.name}.conf")
            config.write_text(f"max_payload: {self._max_payload}\n")
            options += ["-c", str(config)]
        self._process = await asyncio.create_subprocess_exec(
            NATS_SERVER,
            *options,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await wait_for(self._accepts, timeout=10, every=0.02)

    async def _accepts(self) -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        writer.close()
        await writer.wait_closed()
        return True

    def signal(self, signum: int) -> None:
        if self._process is not None:
            os.kill(self._process.pid, signum)

    async def kill(self) -> None:
        """SIGKILL, and reap it; ``start()`` brings it back on the same port and store."""
        if self._process is not None and self._process.returncode is None:
            os.kill(self._process.pid, signal.SIGKILL)
            await asyncio.wait_for(self._process.wait(), timeout=10)
        self._process = None

    async def stop(self) -> None:
        if self._process is not None and self._process.returncode is None:
            os.kill(self._process.pid, signal.SIGCONT)  # in case a test left it stopped
            os.kill(self._process.pid, signal.SIGTERM)
            await asyncio.wait_for(self._process.wait(), timeout=10)
        self._process = None


@pytest.fixture
async def private_nats(tmp_path: Path) -> AsyncIterator[PrivateNats]:
    """A nats-server of the test's own, which it may stop, pause and restart."""
    if not os.access(NATS_SERVER, os.X_OK):
        skip_unless_ci(f"no nats-server binary at {NATS_SERVER}")
    server = PrivateNats(tmp_path / "jetstream")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def stream_info(url: str, stream: str) -> Any:
    """The stream's configuration and state, asked on a connection of its own."""
    nc = await nats.connect(url, allow_reconnect=False, connect_timeout=2)
    try:
        return await nc.jetstream().stream_info(stream)
    finally:
        await nc.close()


__all__ = [
    "NATS_SERVER",
    "NATS_URL",
    "DisposableNatsRouter",
    "PrivateNats",
    "delete_stream",
    "nats_router",
    "open_nats_router",
    "private_nats",
    "skip_unless_ci",
    "stream_info",
    "unique_stream",
]
