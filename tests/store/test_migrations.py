"""Migrations: every store version opens in this one, and they build what tables.py says."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from policy_pubsub.routers import OutMessage, SharedPart
from policy_pubsub.store import Store, SubscriptionRow
from policy_pubsub.store.database import MIGRATIONS
from policy_pubsub.store.tables import metadata
from tests.conftest import postgres_database


def _script() -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config)


def _current(path: Path) -> str | None:
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        revision = MigrationContext.configure(conn).get_current_revision()
    engine.dispose()
    return revision


async def test_migrated_schema_matches_the_tables(tmp_path: Path) -> None:
    """The schema the migrations build is exactly the one tables.py declares."""
    path = tmp_path / "store.db"
    store = Store(f"sqlite+aiosqlite:///{path}")
    await store.open()
    await store.close()
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert diff == []
    assert _current(path) == _script().get_current_head()


async def test_every_older_store_opens_and_keeps_its_data(tmp_path: Path) -> None:
    """A store left at any earlier migration is upgraded to the newest at start, data kept."""
    script = _script()
    for step in script.walk_revisions():
        path = tmp_path / f"at-{step.revision}.db"
        engine = create_engine(f"sqlite:///{path}")
        with engine.begin() as conn:
            _upgrade_to(conn, step.revision)
            conn.execute(text("UPDATE store_revision SET revision = 41"))
        engine.dispose()

        store = Store(f"sqlite+aiosqlite:///{path}")
        await store.open()
        loaded = await store.state.load()
        await store.close()
        assert loaded.revision == 41
        assert _current(path) == script.get_current_head()


def _upgrade_to(conn: Connection, revision: str) -> None:
    from alembic import command

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    command.upgrade(config, revision)


async def test_opening_twice_is_harmless(tmp_path: Path) -> None:
    """Opening a store that is already at the newest migration changes nothing."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    for _ in range(2):
        store = Store(url)
        await store.open()
        await store.close()
    assert _current(tmp_path / "store.db") == _script().get_current_head()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
        return
    async with postgres_database() as url:
        yield url


async def _migrate(url: str, revision: str, *, down: bool = False) -> None:
    """Upgrade (or downgrade) the database to ``revision``, as the store would."""
    from alembic import command

    def run(conn: Connection) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(config, revision)

    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(run)
    finally:
        await engine.dispose()


async def _query(url: str, sql: str) -> list[tuple[Any, ...]]:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(text(sql))
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        await engine.dispose()


async def _columns(url: str, table: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            found = await conn.run_sync(lambda c: inspect(c).get_columns(table))
            return {column["name"] for column in found}
    finally:
        await engine.dispose()


SUBSCRIPTIONS_AT_0002 = (
    "INSERT INTO subscriptions (subscriber_id, topic, body, revision, created_at, updated_at, "
    "last_revision, last_published_at) VALUES "
    "('a', 't-a', '{}', 3, 10, 11, 5, 50), "
    "('b', 't-b', '{}', 4, 12, 13, 9, 90), "
    "('c', 't-c', '{}', 6, 14, 15, NULL, NULL)"
)


async def test_marks_move_out_of_the_subscriptions_and_are_kept(database_url: str) -> None:
    """A store at 0002 whose subscriptions hold marks opens with the same subscriptions and
    marks, now in subscription_marks, one row per subscription.
    """
    await _migrate(database_url, "0002")
    await _query(database_url, SUBSCRIPTIONS_AT_0002)

    store = Store(database_url)
    await store.open()
    try:
        loaded = sorted((await store.state.load()).subscriptions, key=lambda s: s.subscriber_id)
        async with store.write() as tx:
            await tx.mark_published(["c"], 20, 200)
        marked = {
            s.subscriber_id: s.last_revision for s in (await store.state.load()).subscriptions
        }
    finally:
        await store.close()
    assert loaded == [
        SubscriptionRow("a", "t-a", "{}", 3, 10, 11, 5, 50),
        SubscriptionRow("b", "t-b", "{}", 4, 12, 13, 9, 90),
        SubscriptionRow("c", "t-c", "{}", 6, 14, 15, None, None),
    ]
    assert marked == {"a": 5, "b": 9, "c": 20}
    assert sorted(await _query(database_url, "SELECT * FROM subscription_marks")) == [
        ("a", 5, 50),
        ("b", 9, 90),
        ("c", 20, 200),
    ]
    assert await _columns(database_url, "subscriptions") == {
        "subscriber_id",
        "topic",
        "body",
        "revision",
        "created_at",
        "updated_at",
    }


async def test_the_marks_migration_goes_back(database_url: str) -> None:
    """Downgrading from 0003 puts the marks back into the subscriptions' rows."""
    await _migrate(database_url, "0002")
    await _query(database_url, SUBSCRIPTIONS_AT_0002)
    await _migrate(database_url, "0003")
    await _migrate(database_url, "0002", down=True)
    rows = await _query(
        database_url,
        "SELECT subscriber_id, topic, revision, last_revision, last_published_at "
        "FROM subscriptions ORDER BY subscriber_id",
    )
    assert rows == [("a", "t-a", 3, 5, 50), ("b", "t-b", 4, 9, 90), ("c", "t-c", 6, None, None)]
    assert "subscription_marks" not in await _tables(database_url)


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def test_a_new_postgresql_store_matches_the_tables() -> None:
    """On PostgreSQL too the migrations build what tables.py declares, and the tables every
    push updates leave room in their pages.
    """
    async with postgres_database() as url:
        store = Store(url)
        await store.open()
        await store.close()
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                diff = await conn.run_sync(
                    lambda c: compare_metadata(MigrationContext.configure(c), metadata)
                )
        finally:
            await engine.dispose()
        options = await _query(
            url,
            "SELECT relname, reloptions FROM pg_class "
            "WHERE relname IN ('topics', 'subscription_marks', 'subscriptions')",
        )
    assert diff == []
    assert sorted(options) == [
        ("subscription_marks", ["fillfactor=50"]),
        ("subscriptions", None),
        ("topics", ["fillfactor=50"]),
    ]


EL_ALTO_BODY = (
    '{"type": "t", "name": "onap.restart.tca", "version": "1.0.0", '
    '"metadata": {"policy-id": "onap.restart.tca", "policy-version": "1"}}'
)
POLICIES_AT_0004 = (
    "INSERT INTO policies (policy_id, policy_version, policy_type, policy_type_version, body, "
    "revision, deployed_at) VALUES "
    f"('onap.restart.tca', '1', 't', NULL, '{EL_ALTO_BODY}', 3, 10), "
    """('meta.only', '7', 't', NULL, '{"type": "t", "metadata": {"policy-id": "meta.only", """
    """"policy-version": 7}}', 4, 11), """
    """('bare', '2', 't', NULL, '{"type": "t", "name": "bare", "version": 2}', 5, 12)"""
)


async def test_stored_versions_become_the_tosca_versions(database_url: str) -> None:
    """A store at 0004 whose El Alto policy was stored as version "1" (its
    metadata.policy-version) opens with version "1.0.0", its TOSCA version; policies with one
    version only keep it, bodies and keys are kept; the downgrade restores the old versions.
    """
    await _migrate(database_url, "0004")
    await _query(database_url, POLICIES_AT_0004)
    select = "SELECT policy_id, policy_version, body FROM policies ORDER BY policy_id"
    before = await _query(database_url, select)

    store = Store(database_url)
    await store.open()
    try:
        loaded = {row.policy_id: row.policy_version for row in (await store.state.load()).policies}
    finally:
        await store.close()
    assert loaded == {"onap.restart.tca": "1.0.0", "meta.only": "7", "bare": "2"}
    after = await _query(database_url, select)
    assert [(key, body) for key, _, body in after] == [(key, body) for key, _, body in before]

    await _migrate(database_url, "0004", down=True)
    assert await _query(database_url, select) == before


async def test_shared_snapshot_bodies_go_back_into_the_messages(database_url: str) -> None:
    """Downgrading from 0009 gives every message its whole body back, and drops the shared
    bodies and the column that names them.
    """
    shared = SharedPart(0, '{"p":{"a":1}}}')
    store = Store(database_url)
    await store.open()
    try:
        async with store.write() as tx:
            await tx.append(
                [
                    OutMessage(t, f'{{"s":"{t}","policies":{shared.text}', t, 5, shared=shared)
                    for t in ("a", "b")
                ]
                + [OutMessage("a", "raw")],
                50,
            )
    finally:
        await store.close()
    await _migrate(database_url, "0008", down=True)
    rows = await _query(database_url, "SELECT topic, seq, body FROM messages ORDER BY topic, seq")
    assert rows == [
        ("a", 1, '{"s":"a","policies":{"p":{"a":1}}}'),
        ("a", 2, "raw"),
        ("b", 1, '{"s":"b","policies":{"p":{"a":1}}}'),
    ]
    assert "snapshot_bodies" not in await _tables(database_url)
    assert "part" not in await _columns(database_url, "messages")
