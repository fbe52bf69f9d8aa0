"""Migrations: every store version opens in this one, and they build what tables.py says."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, text

from policy_pubsub.store import Store
from policy_pubsub.store.database import MIGRATIONS
from policy_pubsub.store.tables import metadata


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
        loaded = await store.load()
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
