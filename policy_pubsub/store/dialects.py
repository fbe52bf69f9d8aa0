"""Everything that differs between SQLite and PostgreSQL lives here, and only here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.dml import Insert

SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    # A commit returns only once the WAL is on disk: a 2xx answer means the change is durable.
    "PRAGMA synchronous=FULL",
    "PRAGMA busy_timeout=10000",
    "PRAGMA foreign_keys=ON",
)


class UnsupportedDatabase(ValueError):
    """The database URL names a database or driver the store does not support."""


def create_engines(url: str) -> tuple[AsyncEngine, AsyncEngine]:
    """Make the (reader, writer) engines for ``url``; they are one engine where the database
    itself serialises writers (PostgreSQL), two on SQLite, where the writer holds the one lock.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.get_driver_name() != "aiosqlite":
            raise UnsupportedDatabase("use the sqlite+aiosqlite:// driver for SQLite")
        if parsed.database in (None, "", ":memory:"):
            raise UnsupportedDatabase(
                "an in-memory SQLite database cannot be shared by the server's connections; "
                "give a file path, e.g. sqlite+aiosqlite:///./policy-pubsub.db"
            )
        reader = create_async_engine(parsed, pool_size=8, max_overflow=8)
        writer = create_async_engine(parsed, pool_size=1, max_overflow=0)
        _sqlite_setup(reader, begin="BEGIN")
        # IMMEDIATE takes the write lock at the start, so a writer never fails half-way through.
        _sqlite_setup(writer, begin="BEGIN IMMEDIATE")
        return reader, writer
    if backend == "postgresql":
        if parsed.get_driver_name() != "asyncpg":
            raise UnsupportedDatabase("use the postgresql+asyncpg:// driver for PostgreSQL")
        engine = create_async_engine(parsed, pool_size=10, max_overflow=10, pool_pre_ping=True)
        return engine, engine
    raise UnsupportedDatabase(f"unsupported database {backend!r}: use SQLite or PostgreSQL")


def _sqlite_setup(engine: AsyncEngine, *, begin: str) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)


def upsert(dialect: str, table: Table, *, keys: Sequence[str], update: Sequence[str]) -> Insert:
    """``INSERT ... ON CONFLICT (keys) DO UPDATE`` of the ``update`` columns, for executemany."""
    stmt: Any
    if dialect == "sqlite":
        stmt = sqlite.insert(table)
    elif dialect == "postgresql":
        stmt = postgresql.insert(table)
    else:
        raise UnsupportedDatabase(dialect)
    result: Insert = stmt.on_conflict_do_update(
        index_elements=list(keys), set_={name: stmt.excluded[name] for name in update}
    )
    return result
