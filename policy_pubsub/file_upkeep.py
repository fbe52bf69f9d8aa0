"""The periodic job that keeps a SQLite store's file and WAL in proportion to its data.

Every ``CHECKPOINT_SECONDS`` (or ``maintenance_interval_seconds``, the cadence of retention
and compaction, if shorter) it runs :func:`policy_pubsub.store.sqlite_file.tidy` under the
leader lock of :class:`~policy_pubsub.background.Periodic`. That often because SQLite resets
its WAL only when no reader is in it: under steady reads and writes the WAL outgrows the
store's background checkpoints (whenever a commit leaves the WAL past 1 MiB;
commits never checkpoint themselves) between two runs; a run over a WAL of a few MB takes
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


async def upkeep_once(store: Store) -> Tidied:
    """Checkpoint and truncate the WAL, and hand free pages back, now."""
    done = await tidy(store)
    if done.freed:
        log.info("SQLite file: %d free pages handed back, %d left", done.freed, done.pages)
    return done


def file_upkeep(store: Store, maintenance_interval: float) -> Periodic | None:
    """The job for a SQLite store, run every ``CHECKPOINT_SECONDS`` at most; None for
    PostgreSQL.
    """
    if store.dialect != "sqlite":
        return None
    return Periodic(
        "SQLite file upkeep",
        store,
        lambda: upkeep_once(store),
        interval=min(maintenance_interval, CHECKPOINT_SECONDS),
        expected=(StoreUnavailable,),
    )


__all__ = ["file_upkeep", "upkeep_once"]
