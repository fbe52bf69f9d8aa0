"""The periodic job that keeps a SQLite store's file and WAL in proportion to its data.

Every ``maintenance_interval_seconds`` (the cadence of retention and compaction, whose
deletes it hands back to the file system) it runs :func:`policy_pubsub.store.sqlite_file.tidy`
under the leader lock of :class:`~policy_pubsub.background.Periodic`. Only for SQLite:
PostgreSQL's autovacuum and WAL recycling do this themselves.
"""

from __future__ import annotations

import logging

from policy_pubsub.background import Periodic
from policy_pubsub.exceptions import StoreUnavailable
from policy_pubsub.store import Store
from policy_pubsub.store.sqlite_file import Tidied, tidy

log = logging.getLogger(__name__)


class FileUpkeep:
    """Checkpoints and truncates the WAL, and hands free pages back, every ``interval``."""

    def __init__(self, store: Store, *, interval: float) -> None:
        self._store = store
        self._job = Periodic(
            "SQLite file upkeep",
            store,
            self.run_once,
            interval=interval,
            expected=(StoreUnavailable,),
        )

    def start(self) -> None:
        self._job.start()

    async def close(self) -> None:
        await self._job.close()

    async def run_once(self) -> Tidied:
        done = await tidy(self._store)
        if done.freed:
            log.info("SQLite file: %d free pages handed back, %d left", done.freed, done.pages)
        return done


def file_upkeep(store: Store, interval: float) -> FileUpkeep | None:
    """The job for a SQLite store; None for PostgreSQL."""
    return FileUpkeep(store, interval=interval) if store.dialect == "sqlite" else None


__all__ = ["FileUpkeep", "file_upkeep"]
