"""The PAP webhook's replay cache in the store: a signature is recorded once, on every
replica of a shared store, and forgotten once expired.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from policy_pubsub.api.signatures import PRUNE_EVERY_SECONDS, SignatureCheck
from policy_pubsub.store import Store
from policy_pubsub.store.tables import pap_signatures
from policy_pubsub.webhook_signature import sign
from tests.conftest import postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
        return
    async with postgres_database() as url:
        yield url


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    store = Store(database_url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def _count(store: Store) -> int:
    async with store.read() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(pap_signatures))).scalar_one()
        )


async def test_a_digest_is_recorded_once_and_pruned_when_expired(store: Store) -> None:
    """The first use of a digest is True and every later one False; pruning removes the
    entries that expired before the given time and keeps the others.
    """
    assert await store.signatures.first_use("a" * 64, 1_000)
    assert not await store.signatures.first_use("a" * 64, 1_000)
    assert await store.signatures.first_use("b" * 64, 5_000)
    assert await store.signatures.prune(2_000) == 1
    assert await _count(store) == 1
    assert not await store.signatures.first_use("b" * 64, 5_000)


async def test_replicas_racing_with_one_digest_record_it_once() -> None:
    """Several stores on one PostgreSQL database using one digest at once: exactly one
    gets True.
    """
    async with postgres_database() as url:
        stores = [Store(url) for _ in range(4)]
        for store in stores:
            await store.open()
        try:
            for attempt in range(5):
                digest = f"{attempt:064d}"
                firsts = await asyncio.gather(
                    *(s.signatures.first_use(digest, 10**15) for s in stores)
                )
                assert sorted(firsts) == [False, False, False, True]
        finally:
            for store in stores:
                await store.close()


async def test_the_check_prunes_expired_signatures_at_most_once_a_minute(store: Store) -> None:
    """After an accepted signature, expired entries go, but no more often than once every
    PRUNE_EVERY_SECONDS of the check's clock.
    """
    now = 1_800_000_000.0
    check = SignatureCheck(window_seconds=300, legacy=False, clock=lambda: now)
    secret = b"s"

    async def accept(nonce: str) -> None:
        header = sign(secret, "GET", b"/pap/v1/policies", b"", timestamp=int(now), nonce=nonce)
        await check.check(secret, header, "GET", b"/pap/v1/policies", b"", store.signatures)

    await accept("first-nonce")
    now += 400  # the first signature has left the window
    await accept("second-nonce")
    assert await _count(store) == 1, "the expired signature was kept"
    now += 400
    await accept("third-nonce")
    assert await _count(store) == 1
    now += PRUNE_EVERY_SECONDS / 2
    await accept("fourth-nonce")
    assert await _count(store) == 2, "pruned twice within a minute"
