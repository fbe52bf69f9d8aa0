"""Fixtures for the outbox relay's tests: a SQLite store (the NATS fixtures come from
tests/nats_server.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from policy_pubsub.store import Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = Store(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
