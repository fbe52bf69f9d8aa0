"""The periodic job that keeps a SQLite store's file and WAL in proportion to its data.

Every ``CHECKPOINT_SECONDS`` (or ``maintenance_interval_seconds``, the cadence of retention
and compaction, if shorter) it runs :func:`policy_pubsub.store.sqlite_file.tidy` under the
leader lock of :class:`~policy_pubsub.background.Periodic`. That often because SQLite resets
its WAL only when no reader is in it: under steady reads and writes the WAL outgrows its
automatic checkpoints (1,000 pages) between two runs; a run over a WAL of a few MB takes
milliseconds. Only for SQLite: PostgreSQL's autovacuum and WAL recycling do this themselves.
"""

from __future__ import annotations

import logging

from policy_pubsub.background import Periodic
from policy_pubsub.exceptions import StoreUnavailable
from policy_pubsub.store import Store
from policy_pubsub.store.sqlite_file import Tidied, tidy

log = logging.getLogger(__name__)

#: At most this long between two runs.
CHECKPOINT_SECONDS = 5.0


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


def file_upkeep(store: Store, maintenance_interval: float) -> FileUpkeep | None:
    """The job for a SQLite store; None for PostgreSQL."""
    if store.dialect != "sqlite":
        return None
    return FileUpkeep(store, interval=min(maintenance_interval, CHECKPOINT_SECONDS))


__all__ = ["FileUpkeep", "file_upkeep"]
