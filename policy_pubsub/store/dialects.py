"""Everything that differs between SQLite and PostgreSQL lives here, and only here."""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    any_,
    bindparam,
    case,
    event,
    func,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.dml import Insert

from policy_pubsub import constants
from policy_pubsub.store import sqlite_driver
from policy_pubsub.store.tables import TOPIC_OFFSET_FLOOR, store_counters

#: SQLite: the WAL is checkpointed (off the commit path) once its file is larger than this,
#: and cut back to it when started over. A quarter of SQLite's own automatic checkpoint
#: (1,000 pages of 4 KiB), so that the WAL stays small beside the data: a push to 100
#: topics writes some 300 KB of pages to it, and at 4 MiB the WAL alone was as large as
#: the live data of a store of 1,000 subscriptions (bench 9).
WAL_CHECKPOINT_BYTES = 2**20

SQLITE_PRAGMAS = (
    # Free pages can be handed back to the file system (store/sqlite_file.py). It takes effect
    # only in a database with no tables yet, or at the next VACUUM.
    "PRAGMA auto_vacuum=INCREMENTAL",
    "PRAGMA journal_mode=WAL",
    # A commit returns only once the WAL is on disk: a 2xx answer means the change is durable.
    "PRAGMA synchronous=FULL",
    "PRAGMA busy_timeout=10000",
    "PRAGMA foreign_keys=ON",
    # No checkpoint inside a commit: the store checkpoints the WAL in the background once it
    # outgrows WAL_CHECKPOINT_BYTES (Store, ``_checkpoint_wal``), and the file upkeep
    # truncates it every few seconds.
    "PRAGMA wal_autocheckpoint=0",
    # Once checkpointed in full, the WAL is cut back to this size when the next write starts
    # it over, so its file size tells how much it holds past that.
    f"PRAGMA journal_size_limit={WAL_CHECKPOINT_BYTES}",
)


class UnsupportedDatabase(ValueError):
    """The database URL names a database or driver the store does not support."""


@dataclass(frozen=True, slots=True)
class SessionTimeouts:
    """How long PostgreSQL lets a session of this server stay idle before it ends it, so
    that a replica frozen (SIGSTOP, a paused VM, a hung process: alive to TCP) frees what it
    holds; 0: this server sets nothing (the database's or role's own setting applies).
    SQLite: unused.
    """

    #: A pooled session idle inside a transaction (``idle_in_transaction_session_timeout``):
    #: the row locks a frozen replica holds are freed after this long.
    idle_transaction: float = constants.DEFAULT_IDLE_TRANSACTION_TIMEOUT_SECONDS
    #: A leader lock's session, idle (``idle_session_timeout``, PostgreSQL 14+): a frozen
    #: leader's lock is freed after this long. Its holder checks it at a quarter of it.
    leader_lock: float = constants.DEFAULT_LEADER_LOCK_TIMEOUT_SECONDS

    def __post_init__(self) -> None:
        for name in ("idle_transaction", "leader_lock"):
            seconds = getattr(self, name)
            if seconds < 0 or not math.isfinite(seconds):
                raise ValueError(f"{name} must be a finite number of seconds, 0 or more")


def _milliseconds(seconds: float) -> str:
    """A PostgreSQL duration setting in whole milliseconds, at least 1 unless 0 (off)."""
    return str(math.ceil(seconds * 1000)) if seconds > 0 else "0"


#: The pooled connections' name in ``pg_stat_activity``.
APPLICATION_NAME = "policy-pubsub"

#: The oldest PostgreSQL (``server_version_num``) that ends idle sessions.
IDLE_SESSION_TIMEOUT_SINCE = 140000


def create_engines(
    url: str, timeouts: SessionTimeouts | None = None
) -> tuple[AsyncEngine, AsyncEngine]:
    """Make the (reader, writer) engines for ``url``; they are one engine where the database
    itself serialises writers (PostgreSQL), two on SQLite, where the writer holds the one lock.
    On PostgreSQL, each session is ended by the server when it stays idle in a transaction
    longer than ``timeouts.idle_transaction``; the pool pings a connection before handing it
    out, so a session ended meanwhile is replaced, not used.
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
        idle = (timeouts or SessionTimeouts()).idle_transaction
        settings = {"application_name": APPLICATION_NAME}
        if idle:  # 0: nothing is sent, and the database's or role's own setting applies
            settings["idle_in_transaction_session_timeout"] = _milliseconds(idle)
        engine = create_async_engine(
            parsed,
            pool_size=10,
            max_overflow=10,
            pool_pre_ping=True,
            connect_args={"server_settings": settings},
        )
        return engine, engine
    raise UnsupportedDatabase(f"unsupported database {backend!r}: use SQLite or PostgreSQL")


def _sqlite_setup(engine: AsyncEngine, *, begin: str) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        sqlite_driver.install(dbapi_connection)
        cursor = dbapi_connection.cursor()
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)


def upsert(
    dialect: str,
    table: Table,
    *,
    keys: Sequence[str],
    update: Sequence[str],
    never_lower: Sequence[str] = (),
) -> Insert:
    """``INSERT ... ON CONFLICT (keys) DO UPDATE`` of the ``update`` columns, for executemany;
    a column in ``never_lower`` keeps its stored value when the new one is smaller.
    """
    stmt: Any
    if dialect == "sqlite":
        stmt = sqlite.insert(table)
    elif dialect == "postgresql":
        stmt = postgresql.insert(table)
    else:
        raise UnsupportedDatabase(dialect)
    set_: dict[str, Any] = {name: stmt.excluded[name] for name in update}
    for name in never_lower:
        new, old = stmt.excluded[name], table.c[name]
        set_[name] = case((new > old, new), else_=old)
    result: Insert = stmt.on_conflict_do_update(index_elements=list(keys), set_=set_)
    return result


def lock_key(name: str) -> int:
    """A stable 63-bit advisory lock key for a lock name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") >> 1


async def try_lock(conn: AsyncConnection, key: int) -> bool:
    """Take a session-level lock without waiting. SQLite serves one process: always True."""
    if conn.dialect.name == "postgresql":
        result = await conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key})
        held = bool(result.scalar_one())
        await conn.commit()
        return held
    return True


async def unlock(conn: AsyncConnection, key: int) -> None:
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
        await conn.commit()


async def check_lock_connection(conn: AsyncConnection, timeout: float | None = None) -> None:
    """Raise if the connection holding a lock is gone (and the lock with it), or does not
    answer within ``timeout`` seconds (``TimeoutError``).
    """
    async with asyncio.timeout(timeout):
        await conn.execute(text("SELECT 1"))
        await conn.commit()


async def ends_idle_sessions(conn: AsyncConnection) -> bool:
    """Whether the server can end a session left idle (PostgreSQL 14+)."""
    if conn.dialect.name != "postgresql":
        return False
    version = (await conn.execute(text("SHOW server_version_num"))).scalar_one()
    return int(version) >= IDLE_SESSION_TIMEOUT_SINCE


async def end_when_idle(conn: AsyncConnection, seconds: float) -> None:
    """Have PostgreSQL 14+ end this session once it stays idle (outside a transaction) for
    ``seconds`` (0: never), freeing its session locks.
    """
    await conn.execute(
        text("SELECT set_config('idle_session_timeout', :ms, false)"),
        {"ms": _milliseconds(seconds)},
    )
    await conn.commit()


NOTIFY_PAYLOAD_LIMIT = 7900  # PostgreSQL refuses payloads of 8000 bytes or more


async def notify(conn: AsyncConnection, channel: str, payloads: Sequence[str]) -> None:
    """Queue notifications on one channel (see :func:`notify_all`)."""
    await notify_all(conn, [(channel, payload) for payload in payloads])


async def notify_all(conn: AsyncConnection, notes: Sequence[tuple[str, str]]) -> None:
    """Queue notifications (channel, payload) that PostgreSQL delivers only if the
    transaction commits. Each channel's payloads are joined with commas, in the order given,
    into as few notifications as fit; channel by channel, in the order each first appears,
    all of them are queued by one statement. SQLite: nothing.
    """
    if conn.dialect.name != "postgresql" or not notes:
        return
    by_channel: dict[str, list[str]] = {}
    for channel, payload in notes:
        by_channel.setdefault(channel, []).append(payload)
    channels: list[str] = []
    joined: list[str] = []
    for channel, payloads in by_channel.items():
        chunk: list[str] = []
        size = 0
        for payload in payloads:
            if chunk and size + len(payload) + 1 > NOTIFY_PAYLOAD_LIMIT:
                channels.append(channel)
                joined.append(",".join(chunk))
                chunk, size = [], 0
            chunk.append(payload)
            size += len(payload) + 1
        channels.append(channel)
        joined.append(",".join(chunk))
    if len(joined) == 1:
        await conn.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": channels[0], "payload": joined[0]},
        )
    else:
        await conn.execute(
            text(
                "SELECT pg_notify(note.channel, note.payload) FROM "
                "unnest(CAST(:channels AS text[]), CAST(:payloads AS text[])) "
                "WITH ORDINALITY AS note(channel, payload, n) ORDER BY note.n"
            ),
            {"channels": channels, "payloads": joined},
        )


def lock_for_migrations(connection: Connection) -> None:
    """Let one replica at a time migrate a shared database (held until the commit)."""
    if connection.dialect.name == "postgresql":
        connection.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key("policy-pubsub schema")}
        )


def set_fillfactor(connection: Connection, table: str, fillfactor: int | None) -> None:
    """Have PostgreSQL leave free space in the table's pages (``None``: its default, full
    pages), for the pages written from now on. SQLite: nothing.
    """
    if connection.dialect.name != "postgresql":
        return
    name = connection.dialect.identifier_preparer.quote(table)
    if fillfactor is None:
        connection.execute(text(f"ALTER TABLE {name} RESET (fillfactor)"))
    else:
        connection.execute(text(f"ALTER TABLE {name} SET (fillfactor = {int(fillfactor)})"))


def insert_ignore(dialect: str, table: Table) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING``, for executemany."""
    stmt: Any
    if dialect == "sqlite":
        stmt = sqlite.insert(table)
    elif dialect == "postgresql":
        stmt = postgresql.insert(table)
    else:
        raise UnsupportedDatabase(dialect)
    result: Insert = stmt.on_conflict_do_nothing()
    return result


def among(dialect: str, column: ColumnElement[str], values: Sequence[str]) -> ColumnElement[bool]:
    """``column IN values`` with all the values in one bound parameter (an array on
    PostgreSQL, a JSON array read by ``json_each`` on SQLite): one parameter to process and
    one statement to cache however many values there are.
    """
    if dialect == "postgresql":
        array = bindparam(None, list(values), type_=postgresql.ARRAY(column.type))
        return column == any_(array)
    if dialect == "sqlite":
        listed = func.json_each(orjson.dumps(list(values)).decode()).table_valued("value")
        return column.in_(select(listed.c.value))
    raise UnsupportedDatabase(dialect)


def among_param(dialect: str, column: ColumnElement[str], name: str) -> ColumnElement[bool]:
    """``column IN`` the values given as parameter ``name`` at execution (in the shape
    :func:`among_value` makes them): :func:`among` for a statement built once and executed
    many times, which spares building and keying the statement at every execution.
    """
    if dialect == "postgresql":
        return column == any_(bindparam(name, type_=postgresql.ARRAY(column.type)))
    if dialect == "sqlite":
        listed = func.json_each(bindparam(name, type_=column.type)).table_valued("value")
        return column.in_(select(listed.c.value))
    raise UnsupportedDatabase(dialect)


def among_value(dialect: str, values: Sequence[str]) -> Any:
    """The parameter value of :func:`among_param` for these values."""
    return list(values) if dialect == "postgresql" else orjson.dumps(list(values)).decode()


async def advance_topics(
    conn: AsyncConnection, counts: Mapping[str, int], at: int
) -> dict[str, int]:
    """Move each topic named in ``counts`` on by that many offsets, published at ``at``,
    creating those that do not exist yet (created at ``at``, their offsets from the store's
    topic offset floor + 1, see ``tables.TOPIC_OFFSET_FLOOR``); return their new last offsets.
    Appending to a topic clears its ``emptied_at`` mark: it is in use again. One statement, an
    upsert: their rows stay locked until commit. PostgreSQL takes them in the order given,
    code-point order of the names (``counts`` is sorted so), so that concurrent writers lock
    in one order and cannot deadlock; SQLite has one writer at a time.

    On PostgreSQL the floor is read with a shared lock, taken before any topic row: the
    deletion of topic rows takes it exclusively first (``TopicRepository.drop_orphans``), so
    this statement either waits for a deletion to commit and reads the floor it raised (a
    locking read sees the newest committed row, whatever the statement's snapshot), or holds
    the deletion off until this transaction ends.
    """
    if not counts:
        return {}
    names = sorted(counts)
    if conn.dialect.name == "postgresql":
        result = await conn.execute(
            text(
                "INSERT INTO topics AS t "
                "(name, last_offset, base_offset, created_at, last_published_at) "
                "SELECT c.name, coalesce(f.value, 0) + c.n, coalesce(f.value, 0), :at, :at "
                "FROM unnest(CAST(:names AS text[]), CAST(:counts AS bigint[])) "
                "WITH ORDINALITY AS c(name, n, i) LEFT JOIN "
                "(SELECT value FROM store_counters WHERE name = :floor FOR SHARE) f ON true "
                "ORDER BY c.i "
                "ON CONFLICT (name) DO UPDATE "
                "SET last_offset = t.last_offset + excluded.last_offset - excluded.base_offset, "
                "last_published_at = excluded.last_published_at, emptied_at = NULL "
                "RETURNING t.name, t.last_offset"
            ),
            {
                "at": at,
                "names": names,
                "counts": [counts[name] for name in names],
                "floor": TOPIC_OFFSET_FLOOR,
            },
        )
        return {str(name): int(last) for name, last in result}
    if conn.dialect.name == "sqlite":
        # "WHERE true": an upsert after a SELECT needs a WHERE clause to parse.
        result = await conn.exec_driver_sql(
            "INSERT INTO topics (name, last_offset, base_offset, created_at, last_published_at) "
            "SELECT counts.key, coalesce(f.value, 0) + counts.value, coalesce(f.value, 0), ?, ? "
            "FROM json_each(?) AS counts "
            "LEFT JOIN (SELECT value FROM store_counters WHERE name = ?) AS f ON true WHERE true "
            "ON CONFLICT (name) DO UPDATE "
            "SET last_offset = topics.last_offset + excluded.last_offset - excluded.base_offset, "
            "last_published_at = excluded.last_published_at, emptied_at = NULL "
            "RETURNING name, last_offset",
            (
                at,
                at,
                orjson.dumps({name: counts[name] for name in names}).decode(),
                TOPIC_OFFSET_FLOOR,
            ),
        )
        return {str(row[0]): int(row[1]) for row in result}
    raise UnsupportedDatabase(conn.dialect.name)


async def offset_floor(conn: AsyncConnection) -> int:
    """The store's topic offset floor, for a topic row to be made in this transaction. On
    PostgreSQL read with a shared lock held until the transaction ends (see
    :func:`advance_topics`); SQLite's writer holds the one write lock anyway.
    """
    result = await conn.execute(
        select(store_counters.c.value)
        .where(store_counters.c.name == TOPIC_OFFSET_FLOOR)
        .with_for_update(read=True)
    )
    return int(result.scalar_one_or_none() or 0)


async def offset_floor_for_update(conn: AsyncConnection) -> int:
    """The store's topic offset floor, locked exclusively until the transaction ends on
    PostgreSQL, to raise it (see :func:`advance_topics`). The row is made if it is missing.
    """
    await conn.execute(
        insert_ignore(conn.dialect.name, store_counters).values(name=TOPIC_OFFSET_FLOOR, value=0)
    )
    result = await conn.execute(
        select(store_counters.c.value)
        .where(store_counters.c.name == TOPIC_OFFSET_FLOOR)
        .with_for_update()
    )
    return int(result.scalar_one())


async def bulk_insert(
    conn: AsyncConnection, table: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    """Insert ``rows`` (tuples of the ``columns``' values) in order, without SQLAlchemy's
    per-row parameter processing: COPY on PostgreSQL, one executemany on SQLite. Values of
    columns left out come from their defaults in row order (e.g. ascending ids).
    """
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        import asyncpg  # type: ignore[import-untyped]

        driver = await _driver_in_transaction(conn)
        try:
            await driver.copy_records_to_table(
                table.name, records=rows, columns=list(columns), schema_name=table.schema
            )
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # As SQLAlchemy's own statements raise it (the store answers StoreUnavailable).
            raise DBAPIError(f"COPY {table.name}", None, exc) from exc
        return
    quote = conn.dialect.identifier_preparer.quote
    names = ", ".join(quote(name) for name in columns)
    marks = ", ".join("?" for _ in columns)
    await conn.exec_driver_sql(
        f"INSERT INTO {_table_name(conn, table)} ({names}) VALUES ({marks})", list(rows)
    )


def _table_name(conn: AsyncConnection, table: Table) -> str:
    name: str = conn.dialect.identifier_preparer.format_table(table)
    return name


async def _driver_in_transaction(conn: AsyncConnection) -> Any:
    """The asyncpg connection under ``conn``, inside the transaction SQLAlchemy began (the
    driver starts it at the first statement, so one runs first if none has yet).
    """
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    if driver is None:
        raise UnsupportedDatabase("no driver connection")
    if not driver.is_in_transaction():
        await conn.execute(text("SELECT 1"))
    return driver
