"""SQLite's WAL is checkpointed in the background, never inside a commit, and stays bounded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from policy_pubsub.file_upkeep import upkeep_once
from policy_pubsub.routers import OutMessage
from policy_pubsub.store import Store, now_ms, topics
from policy_pubsub.store.dialects import WAL_CHECKPOINT_BYTES
from tests.conftest import wait_for


async def test_commits_leave_the_checkpoint_to_the_background(tmp_path: Path) -> None:
    """A commit that grows the WAL past the limit returns with its frames still in the WAL
    (no checkpoint inside it); the store then copies them into the database in the
    background, and the next write cuts the WAL file back to the limit.
    """
    path = tmp_path / "wal.db"
    store = Store(f"sqlite+aiosqlite:///{path}")
    await store.open()
    wal = f"{path}-wal"
    try:
        body = "x" * 2000
        batch = [OutMessage(f"t-{i}", body, key=f"s-{i}", revision=1) for i in range(4000)]
        async with store.write() as tx:
            await tx.append(batch, now_ms())
            started = store.wal_checkpoints
        assert os.stat(wal).st_size > WAL_CHECKPOINT_BYTES  # the commit checkpointed nothing

        async def checkpointed() -> bool:
            return store.wal_checkpoints > started

        await wait_for(checkpointed, timeout=10)
        async with store.write() as tx:
            await tx.append([OutMessage("t-0", "small", key="s-0", revision=2)], now_ms())
        assert os.stat(wal).st_size <= WAL_CHECKPOINT_BYTES
        assert len(await store.topics.messages("t-0", 0, 10)) == 2
    finally:
        await store.close()


async def test_the_writer_never_checkpoints_on_commit(tmp_path: Path) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    await store.open()
    try:
        async with store.write() as tx:
            found = await tx.conn.exec_driver_sql("PRAGMA wal_autocheckpoint")
            assert found.scalar_one() == 0
    finally:
        await store.close()


async def _compacted_wal(path: Path, chunk_rows: int, monkeypatch: pytest.MonkeyPatch) -> int:
    """Compact 3,600 superseded snapshots, from an empty WAL, ``chunk_rows`` per
    transaction: the WAL file's size afterwards (a WAL started over keeps its file size).
    """
    monkeypatch.setattr(topics, "CHUNK_ROWS", chunk_rows)
    store = Store(f"sqlite+aiosqlite:///{path}")
    await store.open()
    try:
        for revision in range(10):
            batch = [
                OutMessage(
                    f"t-{i}", f"{i}:{revision}:" + "x" * 200, key=f"s-{i}", revision=revision
                )
                for i in range(400)
            ]
            async with store.write() as tx:
                await tx.append(batch, now_ms())
        assert not (await upkeep_once(store)).wal_busy
        assert os.stat(f"{path}-wal").st_size == 0
        assert await store.topics.compact() == 3600
        assert await store.topics.messages("t-7", 0, 10) == [(10, "7:9:" + "x" * 200)]
        return os.stat(f"{path}-wal").st_size
    finally:
        await store.close()


async def test_compaction_keeps_the_wal_to_a_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compaction deletes a chunk of rows per transaction and checkpoints the WAL between
    two, so the WAL holds about one chunk's pages, not every page of the whole delete.
    """
    whole = await _compacted_wal(tmp_path / "whole.db", 1_000_000, monkeypatch)
    chunked = await _compacted_wal(tmp_path / "chunked.db", 400, monkeypatch)
    assert chunked < whole / 3, (chunked, whole)
