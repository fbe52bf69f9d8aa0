"""Keeping a SQLite store's file and WAL in proportion to the data they hold.

SQLite reuses the pages that deletes free but never gives them back to the file system, and
its WAL file, once grown, keeps its size after each checkpoint. Retention, compaction and
unsubscribes delete steadily, so without this the file only grows and the WAL stays at its
largest. :func:`tidy` (run by a periodic job, off the commit path) does three things:

- ``PRAGMA wal_checkpoint(TRUNCATE)``: copies the WAL into the database and truncates it to
  zero bytes (when a reader still uses part of the WAL, it does what it can and says so; the
  next run finishes);
- in a database with incremental auto-vacuum (every database created since it was the
  default), ``PRAGMA incremental_vacuum`` hands the free pages back once they are more than
  ``FREE_SHARE`` of the file;
- in an older database (auto-vacuum off, which only a VACUUM can change), one ``VACUUM``
  when more than ``CONVERT_SHARE`` of the file is free: it rewrites the file compactly and
  switches it to incremental auto-vacuum, after which the step above takes over. It holds
  the write lock for as long as it copies the live data (seconds per hundred MB), once.

Each step holds the store's write lock, so commits wait for it but never do it themselves.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from policy_pubsub.store.database import Store

log = logging.getLogger(__name__)

#: Free pages are handed back once they are more than this share of the file.
FREE_SHARE = 0.1
#: An old database (no auto-vacuum) is rewritten once more than this share of it is free.
CONVERT_SHARE = 0.5
#: ... and only once the free space is worth a rewrite (pages of 4 KiB: 4 MiB).
CONVERT_MIN_FREE_PAGES = 1024
INCREMENTAL = 2  # PRAGMA auto_vacuum's value for incremental auto-vacuum


@dataclass(frozen=True, slots=True)
class Tidied:
    """What one :func:`tidy` found and did."""

    pages: int  # the file's pages afterwards
    freed: int  # free pages handed back to the file system
    vacuumed: bool  # the file was rewritten by VACUUM
    wal_busy: bool  # a reader kept the checkpoint from finishing


async def tidy(store: Store) -> Tidied:
    """Hand free pages back and truncate the WAL (see the module docstring)."""
    async with store.file_statements() as sql:
        mode = (await sql.rows("PRAGMA auto_vacuum"))[0][0]
        pages = (await sql.rows("PRAGMA page_count"))[0][0]
        free = (await sql.rows("PRAGMA freelist_count"))[0][0]
        freed, vacuumed = 0, False
        if mode == INCREMENTAL:
            if free > FREE_SHARE * pages:
                await sql.run(f"PRAGMA incremental_vacuum({int(free)})")
                freed = free
        elif free > CONVERT_SHARE * pages and free >= CONVERT_MIN_FREE_PAGES:
            log.info(
                "rewriting the SQLite file (VACUUM): %d of its %d pages are free, and it is "
                "switched to incremental auto-vacuum",
                free,
                pages,
            )
            await sql.run("VACUUM")
            freed, vacuumed = free, True
        busy = (await sql.rows("PRAGMA wal_checkpoint(TRUNCATE)"))[0][0]
        after = (await sql.rows("PRAGMA page_count"))[0][0]
    return Tidied(int(after), int(freed), vacuumed, bool(busy))


__all__ = ["Tidied", "tidy"]
