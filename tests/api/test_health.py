"""``/healthcheck`` is anonymous: a failing part is named in plain words, while the driver's
text (SQL, host names) goes to the log, once per change rather than once per probe.
"""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from policy_pubsub.exceptions import StoreUnavailable
from policy_pubsub.testing import start_server, stop_server
from tests.conftest import make_settings

DRIVER_TEXT = "(sqlite3.OperationalError) disk I/O error [SQL: SELECT revision FROM store_revision]"


async def test_a_failing_store_is_named_without_its_driver_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    live, task = await start_server(make_settings(tmp_path))
    store = live.state.store

    async def failing_ping() -> None:
        raise StoreUnavailable(DRIVER_TEXT)

    try:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
            with caplog.at_level(logging.INFO, logger="policy_pubsub.api.health"):
                monkeypatch.setattr(store, "ping", failing_ping)
                answers = [await http.get("/healthcheck") for _ in range(3)]
                monkeypatch.undo()
                recovered = await http.get("/healthcheck")
    finally:
        await stop_server(live, task)
    for answer in answers:
        assert answer.status_code == 503
        body = answer.json()
        assert body["details"]["store"] == "unavailable; the server log says why"
        assert "SQL" not in answer.text and "sqlite3" not in answer.text
    assert recovered.status_code == 200
    # The embedded router keeps its topics in the store: it fails with it.
    lines = [r.getMessage() for r in caplog.records if r.name == "policy_pubsub.api.health"]
    assert sorted(lines) == sorted(
        [
            *(f"healthcheck: the {part}: {DRIVER_TEXT}" for part in ("store", "router")),
            *(f"healthcheck: the {part} answers again" for part in ("store", "router")),
        ]
    )
