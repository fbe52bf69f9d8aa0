"""Fixtures for the outbox relay's tests: a SQLite store, and a private nats-server."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from policy_pubsub.store import OutMessage, Store
from tests.routers.test_nats import NATS_SERVER, PrivateNats, skip_unless_ci


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = Store(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def private_nats(tmp_path: Path) -> AsyncIterator[PrivateNats]:
    """A nats-server with JetStream of this test's own, which it may stop and restart."""
    if not os.access(NATS_SERVER, os.X_OK):
        skip_unless_ci(f"no nats-server binary at {NATS_SERVER}")
    server = PrivateNats(tmp_path / "jetstream")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def snapshot(subscriber: int, revision: int, topics: int = 10) -> OutMessage:
    """Subscriber ``s<subscriber>``'s snapshot of ``revision``, as the service writes it."""
    key = f"s{subscriber}"
    return OutMessage(
        topic=f"t{subscriber % topics}",
        body=f'{{"subscriber_id":"{key}","revision":{revision}}}',
        key=key,
        revision=revision,
        dedup_id=f"{key}@{revision}",
    )


async def fill_outbox(store: Store, subscribers: int, revisions: int) -> None:
    """Every subscriber's snapshot of revision 1, then of 2, ...: one transaction each, in
    revision order, as the changes would have committed them.
    """
    for revision in range(1, revisions + 1):
        async with store.write() as tx:
            await tx.outbox_add([snapshot(i, revision) for i in range(subscribers)], 0)
