"""An outage of the store or the router is logged once when it starts, in a summary at most
every ``summary_seconds`` while it lasts, and once when it ends; not once a refused request.
"""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from policy_pubsub.exceptions import RouterUnavailable, StoreUnavailable
from policy_pubsub.outages import Outages
from policy_pubsub.testing import start_server, stop_server
from tests.conftest import make_settings, wait_for
from tests.nats_server import PrivateNats

LOGGER = "policy_pubsub.outages"


def _lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == LOGGER]


async def test_many_refusals_make_one_line_to_start_and_one_to_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    up = False

    async def probe() -> None:
        if not up:
            raise ConnectionError("still down")

    outages = Outages(summary_seconds=3600, probe_seconds=0.01)
    outages.start(probe, probe)
    try:
        for _ in range(50):
            outages.refused(RouterUnavailable("NATS: no servers available"))
        outages.refused(StoreUnavailable("not an outage of the router"))
        assert outages.router.ongoing and outages.router.refused_count == 50
        up = True
        await wait_for(lambda: not outages.router.ongoing and not outages.store.ongoing)
    finally:
        await outages.close()
    lines = _lines(caplog)
    router = [line for line in lines if "message router" in line[1]]
    assert [level for level, _ in router] == ["WARNING", "INFO"], lines
    assert "NATS: no servers available" in router[0][1]
    assert "50 requests were refused" in router[1][1]
    store = [line for line in lines if "store" in line[1]]
    assert [level for level, _ in store] == ["WARNING", "INFO"], lines


async def test_a_long_outage_is_summarised_at_most_once_an_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    outages = Outages(summary_seconds=3600, probe_seconds=0.01)
    for _ in range(20):
        outages.refused(StoreUnavailable("disk I/O error"))
    assert len(_lines(caplog)) == 1  # the start; no summary within the interval
    outages.store._summarised_at -= 3600  # as if the interval had passed
    outages.refused(StoreUnavailable("disk I/O error"))
    outages.refused(StoreUnavailable("disk I/O error"))
    summaries = [m for _, m in _lines(caplog) if "so far" in m]
    assert len(summaries) == 1 and "21 requests refused so far" in summaries[0]
    await outages.close()


async def test_a_nats_outage_under_load_logs_a_few_lines_not_one_a_request(
    tmp_path: Path, private_nats: PrivateNats, caplog: pytest.LogCaptureFixture
) -> None:
    """Forty requests that need NATS while it is down: each is a 503 and counted, and the
    outage makes one WARNING; once NATS is back, one INFO counting them.
    """
    caplog.set_level(logging.INFO)
    live, task = await start_server(make_settings(tmp_path, router_url=private_nats.url))
    try:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
            assert (await http.post("/events/t", json={"n": 1})).status_code == 200
            await private_nats.stop()
            for _ in range(40):
                assert (await http.get("/topics/t")).status_code == 503
            await private_nats.start()
            await wait_for(lambda: not live.state.outages.router.ongoing, timeout=15)
    finally:
        await stop_server(live, task)
    lines = _lines(caplog)
    assert [level for level, _ in lines] == ["WARNING", "INFO"], lines
    assert "40 requests were refused" in lines[1][1]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
