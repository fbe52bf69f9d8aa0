"""Fixtures and helpers for tests that need RabbitMQ, loaded for every test through
``pytest_plugins`` in tests/conftest.py.

The broker is the shared one on 127.0.0.1:5672 (``POLICY_PUBSUB_TEST_AMQP_URL``), never
stopped: each test gets an exchange of its own and subscriber ids of its own, and deletes the
exchange and every queue it made at the end. Without a broker the tests are skipped, except
in CI, where that is a failure.
"""

from __future__ import annotations

import contextlib
import os
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
from tests.nats_server import skip_unless_ci

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


__all__ = [
    "AMQP_URL",
    "DisposableAmqpRouter",
    "amqp_router",
    "delete_on_broker",
    "open_amqp_router",
    "skip_without_rabbitmq",
    "unique_exchange",
]
