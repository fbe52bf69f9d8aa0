"""One trip to aiosqlite's thread per SQLite statement, rather than three or four.

aiosqlite runs each call on the connection in a thread of its own and hands the result back
to the event loop: a queue put, a thread wake-up and a ``call_soon_threadsafe`` per call.
SQLAlchemy's aiosqlite adapter makes a call for each step of a statement (open a cursor,
execute, fetch the rows, close the cursor), so a statement costs three or four of those trips,
and a group commit of eight statements (with its BEGIN, commit and the pool's rollback) about
57. Each trip is two thread switches, and on a busy machine a switch can cost the event loop
its CPU for a while.

:func:`install` makes a connection's ordinary cursors :class:`OneTripCursor`: the statement
runs to its end in the thread (execute, every row, the row count, the last row id, the cursor
closed) in one call, and the cursor hands back what it kept. Server-side cursors (streamed
results) stay SQLAlchemy's. Rolling back a connection that holds no transaction (the pool
does it each time a connection comes back) makes no trip at all. A ``BEGIN`` (``BEGIN
IMMEDIATE`` on the writer) makes no trip of its own either: it runs in the thread just before
the transaction's first statement, in that statement's trip, so a group commit's transaction
takes the write lock, and fails if it cannot, exactly where it did, at its start; a
transaction that ran no statement commits or rolls back without a trip.

The statements, their order, their transactions and their commits are exactly as before: a
commit still returns once SQLite's commit (with its fsync) returned in the thread.

It relies on aiosqlite's ``Connection._execute`` (queue a call for the thread) and ``_conn``
(the ``sqlite3`` connection), as SQLAlchemy's adapter relies on ``_tx`` and ``_conn``; the
connection of an aiosqlite without them keeps SQLAlchemy's cursors.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy.util import concurrency

# Runs a coroutine from SQLAlchemy's greenlet: await_ since 2.1, await_only before.
_await: Any = getattr(concurrency, "await_", None) or concurrency.await_only

__all__ = ["OneTripCursor", "install"]

#: What a statement leaves: its description, rows, row count and last row id.
_Outcome = tuple[Any, list[Any], int, int | None]


#: Where a connection keeps the BEGIN it has yet to run (on aiosqlite's connection object).
_BEGIN = "_one_trip_begin"


def _run(
    conn: sqlite3.Connection, operation: str, parameters: Any, many: bool, begin: str | None
) -> _Outcome:
    """In aiosqlite's thread: run ``begin`` if any, then the statement to its end, and keep
    what it left.
    """
    cursor = conn.cursor()
    try:
        if begin is not None:
            cursor.execute(begin)
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class OneTripCursor:
    """A DBAPI cursor over an aiosqlite connection that runs each statement in one call."""

    server_side = False
    arraysize = 1

    def __init__(self, adapted: Any) -> None:
        self._adapted = adapted  # SQLAlchemy's adapted connection
        self._rows: deque[Any] = deque()
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None

    def _call(self, operation: str, parameters: Any, many: bool) -> Any:
        driver = self._adapted._connection  # aiosqlite's connection
        if not many and not parameters and operation.startswith("BEGIN"):
            setattr(driver, _BEGIN, operation)  # runs with the next statement, in its trip
            self.description, self.rowcount, self.lastrowid = None, -1, None
            self._rows = deque()
            return self
        begin = getattr(driver, _BEGIN, None)
        setattr(driver, _BEGIN, None)
        try:
            outcome: _Outcome = _await(self._locked(driver, operation, parameters, many, begin))
        except Exception as error:
            self._adapted._handle_exception(error)
        self.description, rows, self.rowcount, self.lastrowid = outcome
        self._rows = deque(rows)
        return self

    async def _locked(
        self, driver: Any, operation: str, parameters: Any, many: bool, begin: str | None
    ) -> _Outcome:
        # SQLAlchemy's adapters take this lock around each statement; so does this cursor.
        mutex = getattr(self._adapted, "_execute_mutex", None)
        async with mutex or contextlib.nullcontext():
            outcome: _Outcome = await driver._execute(
                _run, driver._conn, operation, parameters, many, begin
            )
            return outcome

    def execute(self, operation: str, parameters: Any = None) -> Any:
        return self._call(operation, parameters, False)

    def executemany(self, operation: str, seq_of_parameters: Sequence[Any]) -> Any:
        return self._call(operation, seq_of_parameters, True)

    def fetchone(self) -> Any:
        return self._rows.popleft() if self._rows else None

    def fetchmany(self, size: int | None = None) -> list[Any]:
        rows = self._rows
        return [rows.popleft() for _ in range(min(size or self.arraysize, len(rows)))]

    def fetchall(self) -> list[Any]:
        rows = list(self._rows)
        self._rows.clear()
        return rows

    def __iter__(self) -> Iterator[Any]:
        while self._rows:
            yield self._rows.popleft()

    def close(self) -> None:
        self._rows.clear()

    async def _async_soft_close(self) -> None:
        """SQLAlchemy's asyncio results call it; the thread's cursor is already closed."""

    def setinputsizes(self, *sizes: Any) -> None:
        pass

    def setoutputsize(self, size: Any, column: Any = None) -> None:
        pass

    def nextset(self) -> None:
        return None


def _one_trip_class(adapted_class: Any) -> type:
    """A subclass of SQLAlchemy's adapted aiosqlite connection with one-trip cursors."""

    def cursor(self: Any, server_side: bool = False) -> Any:
        if server_side:
            return adapted_class.cursor(self, server_side=True)
        return OneTripCursor(self)

    def rollback(self: Any) -> None:
        driver = self._connection
        if getattr(driver, _BEGIN, None) is not None:
            setattr(driver, _BEGIN, None)  # the BEGIN never ran: nothing to roll back
            return
        if getattr(driver, "_connection", None) is not None and not driver.in_transaction:
            return  # nothing to roll back: no trip to the thread for it
        adapted_class.rollback(self)

    def commit(self: Any) -> None:
        driver = self._connection
        if getattr(driver, _BEGIN, None) is not None:
            setattr(driver, _BEGIN, None)  # the BEGIN never ran: nothing to commit
            return
        adapted_class.commit(self)

    return type(
        f"OneTrip{adapted_class.__name__}",
        (adapted_class,),
        {"__slots__": (), "cursor": cursor, "rollback": rollback, "commit": commit},
    )


_classes: dict[type, type] = {}


def install(adapted: Any) -> None:
    """Give SQLAlchemy's adapted aiosqlite connection one-trip cursors (see the module
    docstring). A connection of an aiosqlite without the call this relies on is left as is.
    """
    driver = getattr(adapted, "_connection", None)
    if not (hasattr(driver, "_execute") and hasattr(driver, "_conn")):
        return
    base = type(adapted)
    if base in _classes.values():
        return
    if base not in _classes:
        _classes[base] = _one_trip_class(base)
    adapted.__class__ = _classes[base]
