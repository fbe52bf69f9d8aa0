"""Change notifications between replicas sharing a PostgreSQL store (LISTEN/NOTIFY).

A notification is only a hint that something committed: whoever receives it re-reads the
database. The listening connection is watched; while it is down the store says so
(:attr:`Notifications.connected` is false) so that readers fall back to re-reading on their own,
and each time it is established, the first time too, every ``on_reconnect`` callback runs, since
notifications sent before it listened are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import make_url

from policy_pubsub.tasks import cancelled

log = logging.getLogger(__name__)

REVISION_CHANNEL = "policy_pubsub_revision"
TOPICS_CHANNEL = "policy_pubsub_topics"
CHANNELS = (REVISION_CHANNEL, TOPICS_CHANNEL)
#: The listening connection's name in ``pg_stat_activity``.
APPLICATION_NAME = "policy-pubsub notifications"

Callback = Callable[[str], None]


def asyncpg_dsn(url: str) -> str:
    """The DSN asyncpg connects to for a ``postgresql+asyncpg://`` URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Notifications:
    """One listening connection per process, kept alive, fanned out to callbacks."""

    def __init__(self, url: str, *, check_interval: float = 2.0, max_backoff: float = 5.0) -> None:
        self._dsn = asyncpg_dsn(url)
        self._check_interval = check_interval
        self._max_backoff = max_backoff
        self._callbacks: dict[str, list[Callback]] = {channel: [] for channel in CHANNELS}
        self._reconnect_callbacks: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._conn: Any = None
        self.connected = False
        #: How many times the listening connection has been (re-)established.
        self.connections = 0

    def on(self, channel: str, callback: Callback) -> None:
        self._callbacks[channel].append(callback)

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        self._reconnect_callbacks.append(callback)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="policy-pubsub notifications")

    async def close(self) -> None:
        task, self._task = self._task, None
        await cancelled(task)
        await self._disconnect()

    async def _run(self) -> None:
        import asyncpg  # type: ignore[import-untyped]

        backoff = 0.1
        first = True
        while True:
            try:
                self._conn = await asyncpg.connect(
                    self._dsn, timeout=5, server_settings={"application_name": APPLICATION_NAME}
                )
                for channel in CHANNELS:
                    await self._conn.add_listener(channel, self._deliver)
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning("cannot listen for store notifications, retrying: %s", exc)
                await self._disconnect()
                await asyncio.sleep(backoff)
                backoff = min(self._max_backoff, backoff * 2)
                continue
            self.connected = True
            self.connections += 1
            backoff = 0.1
            if not first:
                log.info("listening for store notifications again")
            first = False
            # Whatever committed before this connection listened was not notified, even on
            # the first connection: a process reads the store before it listens.
            for callback in self._reconnect_callbacks:
                callback()
            try:
                while True:
                    await asyncio.sleep(self._check_interval)
                    await self._conn.fetchval("SELECT 1", timeout=self._check_interval)
            except (OSError, asyncpg.PostgresError, TimeoutError, asyncpg.InterfaceError) as exc:
                log.warning("lost the store notification connection: %s", exc)
            self.connected = False
            await self._disconnect()
            # Anything could have been missed: let readers re-read now, not at reconnection.
            for callback in self._reconnect_callbacks:
                callback()

    def _deliver(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        for callback in self._callbacks.get(channel, ()):
            try:
                callback(payload)
            except Exception:
                log.exception("a store notification callback failed")

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        self.connected = False
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
