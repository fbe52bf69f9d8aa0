"""Fixtures and helpers for tests that need RabbitMQ, loaded for every test through
``pytest_plugins`` in tests/conftest.py.

The broker is the shared one on 127.0.0.1:5672 (``POLICY_PUBSUB_TEST_AMQP_URL``), never
stopped: each test gets an exchange of its own and subscriber ids of its own, and deletes the
exchange and every queue it made at the end. Without a broker the tests are skipped, except
in CI, where that is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import aio_pika
import aio_pika.exceptions
import aiormq.exceptions
import pytest

from policy_pubsub.exceptions import RouterUnavailable
from policy_pubsub.routers.amqp import AmqpRouter
from policy_pubsub.routers.amqp_shape import group_queue
from policy_pubsub.store import Store
from tests.conftest import wait_for
from tests.nats_server import skip_unless_ci
from tests.processes import free_port

AMQP_URL = os.environ.get("POLICY_PUBSUB_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


async def skip_without_rabbitmq(url: str = AMQP_URL) -> None:
    """Skip the test when RabbitMQ does not answer (fail in CI)."""
    try:
        connection = await aio_pika.connect(url, timeout=2)
    except (OSError, aio_pika.exceptions.AMQPException, aiormq.exceptions.AMQPError) as exc:
        skip_unless_ci(f"no RabbitMQ at {url}: {exc!r}")
    else:
        await connection.close()


def unique_exchange() -> str:
    """An exchange name no other test uses."""
    return f"pps-test-{uuid.uuid4().hex[:16]}"


async def delete_on_broker(exchange: str, queues: Iterable[str], url: str = AMQP_URL) -> None:
    """Delete an exchange and queues, those that exist."""
    connection = await aio_pika.connect(url, timeout=5)
    try:
        for queue in queues:
            channel = await connection.channel()
            with contextlib.suppress(aiormq.exceptions.AMQPError):
                await channel.queue_delete(queue)
            if not channel.is_closed:
                await channel.close()
        channel = await connection.channel()
        with contextlib.suppress(aiormq.exceptions.AMQPError):
            await channel.exchange_delete(exchange)
    finally:
        await connection.close()


class DisposableAmqpRouter(AmqpRouter):
    """A router whose close() also deletes its exchange and the queues it declared, plus the
    ``extra_queues`` a test names, so tests leave nothing behind.
    """

    def __init__(self, url: str, store: Store, **options: Any) -> None:
        super().__init__(url, store, **options)
        self.extra_queues: set[str] = set()

    def declared(self) -> set[str]:
        """The queues this router declared (or was told to forget)."""
        return set(self._bound) | self.extra_queues

    def group_queue(self, topic: str, group: str) -> str:
        return group_queue(self.exchange, topic, group)

    async def close(self) -> None:
        queues = self.declared()
        await super().close()
        with contextlib.suppress(OSError, aiormq.exceptions.AMQPError):
            await delete_on_broker(self.exchange, queues)


async def open_amqp_router(
    tmp_path: Path,
    *,
    url: str = AMQP_URL,
    exchange: str | None = None,
    database: str = "router.db",
    **options: Any,
) -> tuple[DisposableAmqpRouter, Store]:
    """A started router on a fresh exchange and a SQLite store in ``tmp_path``. Skipped when
    RabbitMQ is unreachable outside CI.
    """
    store = Store(f"sqlite+aiosqlite:///{tmp_path / database}")
    await store.open()
    settings: dict[str, Any] = {
        "retention_seconds": 3600,
        "queue_max_length": 100,
        "max_message_bytes": 1024 * 1024,
        "timeout": 5.0,
        **options,
    }
    router = DisposableAmqpRouter(url, store, exchange=exchange or unique_exchange(), **settings)
    await router.start()
    try:
        await router.ping()
    except RouterUnavailable as exc:
        await router.close()
        await store.close()
        skip_unless_ci(f"no RabbitMQ at {url}: {exc.message}")
    return router, store


@pytest.fixture
async def amqp_router(tmp_path: Path) -> AsyncIterator[DisposableAmqpRouter]:
    """A started router on an exchange of its own on the shared RabbitMQ, deleted after."""
    router, store = await open_amqp_router(tmp_path)
    try:
        yield router
    finally:
        await router.close()
        await store.close()


RABBITMQ_SERVER = os.environ.get("RABBITMQ_SERVER_SCRIPT", "/usr/lib/rabbitmq/bin/rabbitmq-server")
AMQP_HEADER = b"AMQP\x00\x00\x09\x01"


class PrivateRabbitMQ:
    """A RabbitMQ node of the test's own: its own node name, AMQP and distribution ports on
    loopback, its own database, logs and Erlang cookie under ``home``, no plugins. ``kill()``
    is kill -9 of its Erlang VM; ``start()`` brings it back on the same ports and database.
    """

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self._dist_port = free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self._wrapper: asyncio.subprocess.Process | None = None

    def _environment(self) -> dict[str, str]:
        home = self.home
        return {
            **os.environ,
            "HOME": str(home),
            "RABBITMQ_NODENAME": f"pps-test-{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self._dist_port),
            "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
            "RABBITMQ_LOG_BASE": str(home / "log"),
            "RABBITMQ_CONFIG_FILE": str(home / "rabbitmq"),  # none there: the defaults
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(home / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(home / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(home / "pid"),
        }

    async def start(self, timeout: float = 90.0) -> None:
        """Start the node; return once it answers AMQP."""
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "enabled_plugins").write_text("[].\n")
        (self.home / "pid").unlink(missing_ok=True)
        with (self.home / "console.log").open("ab") as log:
            self._wrapper = await asyncio.create_subprocess_exec(
                RABBITMQ_SERVER,
                env=self._environment(),
                cwd=self.home,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        wrapper = self._wrapper

        async def answers() -> bool:
            if wrapper.returncode is not None:
                pytest.fail(f"the private RabbitMQ exited with {wrapper.returncode} at start")
            return await self._answers()

        await wait_for(answers, timeout=timeout, every=0.2)

    async def _answers(self) -> bool:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        try:
            writer.write(AMQP_HEADER)
            first = await asyncio.wait_for(reader.read(1), 2)
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()
        return first == b"\x01"  # a Connection.Start frame: the node has booted

    def _beam(self) -> int | None:
        """The Erlang VM's pid, from the pid file the node writes as it boots."""
        try:
            return int((self.home / "pid").read_text().strip())
        except (OSError, ValueError):
            return None

    async def kill(self) -> None:
        """kill -9 of the VM, and wait until it is gone."""
        await self._end(signal.SIGKILL)

    async def stop(self) -> None:
        await self._end(signal.SIGTERM)

    async def _end(self, signum: int) -> None:
        wrapper, self._wrapper = self._wrapper, None
        if wrapper is None:
            return
        beam = self._beam()
        for pid in (beam, wrapper.pid):
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)
        try:
            await asyncio.wait_for(wrapper.wait(), 30)
        except TimeoutError:
            for pid in (beam, wrapper.pid):
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            await wrapper.wait()


@pytest.fixture
async def private_rabbitmq(tmp_path: Path) -> AsyncIterator[PrivateRabbitMQ]:
    """A RabbitMQ node of the test's own, which it may kill and restart."""
    if not os.access(RABBITMQ_SERVER, os.X_OK):
        skip_unless_ci(f"no RabbitMQ server script at {RABBITMQ_SERVER}")
    node = PrivateRabbitMQ(tmp_path / "rabbitmq")
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


__all__ = [
    "AMQP_URL",
    "DisposableAmqpRouter",
    "PrivateRabbitMQ",
    "amqp_router",
    "delete_on_broker",
    "open_amqp_router",
    "private_rabbitmq",
    "skip_without_rabbitmq",
    "unique_exchange",
]
