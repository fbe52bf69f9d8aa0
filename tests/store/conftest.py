"""The store the tests of this folder write to, on each database the ``settings`` fixture
names (tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from policy_pubsub.config import Settings
from policy_pubsub.store import Store


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    store = Store(settings.database_url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
