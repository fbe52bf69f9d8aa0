"""PostgreSQL ends the sessions of a replica that stays idle too long: its pooled sessions
idle inside a transaction, its leader locks' sessions idle at all; a live holder keeps its
locks, and one whose session was ended says so once and no longer leads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from pydantic import ValidationError
from sqlalchemy import text

from policy_pubsub.config import Settings
from policy_pubsub.store import LeaderLock, Store
from policy_pubsub.store.dialects import SessionTimeouts, lock_key
from tests.conftest import postgres_database

LOCK = "session timeouts test"
HOLDER = text("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = :objid")


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    """A store on a fresh PostgreSQL database, with short session timeouts."""
    async with postgres_database() as url:
        opened = Store(url, SessionTimeouts(idle_transaction=1.5, leader_lock=0.5))
        await opened.open()
        try:
            yield opened
        finally:
            await opened.close()


async def _holder(store: Store) -> int | None:
    """The backend holding the test's lock, if any."""
    async with store.read() as conn:
        pid = (await conn.execute(HOLDER, {"objid": lock_key(LOCK) & 0xFFFFFFFF})).scalar()
    return None if pid is None else int(pid)


async def test_pooled_sessions_end_when_idle_in_a_transaction(store: Store) -> None:
    """Each pooled session carries the idle-in-transaction timeout it was given, and the
    server's name (so an operator finds its sessions in ``pg_stat_activity``).
    """
    async with store.read() as conn:
        setting = (await conn.execute(text("SHOW idle_in_transaction_session_timeout"))).scalar()
        name = (await conn.execute(text("SHOW application_name"))).scalar()
    assert (setting, name) == ("1500ms", "policy-pubsub")
    assert store.ends_idle_sessions  # this machine runs PostgreSQL 15


async def test_a_live_holder_keeps_its_lock_past_the_idle_timeout(store: Store) -> None:
    """Held for three times its session's idle timeout without a call, the lock stays on
    the same session: the holder's own checks keep it from being idle that long.
    """
    lock = LeaderLock(store, LOCK)
    try:
        assert await lock.acquire()
        held_by = await _holder(store)
        assert held_by is not None
        await asyncio.sleep(1.5)
        assert await _holder(store) == held_by
        assert await lock.acquire()
    finally:
        await lock.release()
    assert await _holder(store) is None


async def test_a_holder_whose_session_ended_says_so_once_and_no_longer_leads(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Once its lock's session is ended (as PostgreSQL ends a frozen holder's), the holder
    logs the loss once, and finds the lock taken by another process that took it meanwhile.
    """
    mine, other = LeaderLock(store, LOCK), LeaderLock(store, LOCK)
    try:
        assert await mine.acquire()
        held_by = await _holder(store)
        async with store.connect() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": held_by})
            await conn.commit()
        # Another "replica" takes the lock before this one notices.
        for _ in range(100):
            if await other.acquire():
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the lock was not freed when its session ended")
        with caplog.at_level(logging.WARNING, logger="policy_pubsub.store.leader"):
            assert not await mine.acquire()
            assert not await mine.acquire()
            await asyncio.sleep(0.3)  # a check of its own, had it one left, would log again
        lost = [r for r in caplog.records if "lost the session timeouts test lock" in r.message]
        assert len(lost) == 1, caplog.text
        assert await other.acquire()
    finally:
        await mine.release()
        await other.release()


@pytest.mark.parametrize(
    "name", ["idle_transaction_timeout_seconds", "leader_lock_timeout_seconds"]
)
def test_session_timeouts_are_0_or_at_least_half_a_second(name: str) -> None:
    assert getattr(Settings(**{name: 0}), name) == 0
    assert getattr(Settings(**{name: 0.5}), name) == 0.5
    for bad in (0.1, -1):
        with pytest.raises(ValidationError):
            Settings(**{name: bad})
