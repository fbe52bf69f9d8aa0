"""The app's assembly: what its lifespan does to the process's garbage collector."""

from __future__ import annotations

import gc
from pathlib import Path

from policy_pubsub.api import GC_THRESHOLDS
from policy_pubsub.testing import start_server, stop_server
from tests.conftest import make_settings


def _tracked(thing: object) -> bool:
    return any(tracked is thing for tracked in gc.get_objects())


async def test_start_up_objects_stay_out_of_full_collections_while_serving(
    tmp_path: Path,
) -> None:
    """While the server runs, what existed when it started (the store's contents, modules)
    is frozen out of the collector's full collections and collections run less often; once
    it stops, both are as before.
    """
    before = gc.get_threshold()
    made_before = {"a container": ["the collector tracks"]}
    assert _tracked(made_before)
    live, task = await start_server(make_settings(tmp_path))
    try:
        assert gc.get_threshold() == GC_THRESHOLDS
        assert not _tracked(made_before)
        made_after = {"a container": ["made while serving"]}
        assert _tracked(made_after)
    finally:
        await stop_server(live, task)
    assert _tracked(made_before)
    assert gc.get_threshold() == before


async def test_the_collector_is_as_before_once_the_last_server_stops(tmp_path: Path) -> None:
    """With two servers in one process, stopping the first leaves the second's tuning in
    place; stopping the second restores the collector.
    """
    before = gc.get_threshold()
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
    first, first_task = await start_server(make_settings(tmp_path / "one"))
    second, second_task = await start_server(make_settings(tmp_path / "two"))
    made_before = {"a container": ["made before the first stops"]}
    await stop_server(first, first_task)
    try:
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        await stop_server(second, second_task)
    assert gc.get_threshold() == before
    assert _tracked(made_before)
