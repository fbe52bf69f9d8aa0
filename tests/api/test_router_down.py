"""Reads do not need the router: while the message router is down, a component can still
re-read its subscription with its policies and ask the decision API; only what the router
would tell (when a consumer group last read the topic) is missing, and says why.
"""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from policy_pubsub.testing import start_server, stop_server
from tests.api.helpers import SUBSCRIPTIONS, push, subscribe
from tests.conftest import load_policy, make_settings
from tests.nats_server import PrivateNats


async def test_subscription_reads_and_decisions_answer_while_nats_is_down(
    tmp_path: Path, private_nats: PrivateNats, caplog: pytest.LogCaptureFixture
) -> None:
    """...and a server stopped while NATS is still down shuts down cleanly: every part is
    closed, the store last, with no ERROR.
    """
    caplog.set_level(logging.INFO)
    live, task = await start_server(make_settings(tmp_path, router_url=private_nats.url))
    try:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
            await subscribe(http, "tca-1", "t1", [{"policy-id": "onap.restart.tca"}])
            pushed = await push(http, load_policy("onap.restart.tca"))
            await private_nats.stop()

            shown = await http.get(f"{SUBSCRIPTIONS}/tca-1", params={"policies": "true"})
            assert shown.status_code == 200, shown.text
            body = shown.json()
            assert list(body["policies"]) == ["onap.restart.tca"]
            assert body["status"]["last_revision"] == pushed["revision"]
            assert body["status"]["last_consumed_at"] is None
            assert body["status"]["last_consumed_unknown"] == "the message router cannot be reached"

            decided = await http.post(
                "/decision/v1", json={"policy-filters": [{"policy-id": "onap.restart.tca"}]}
            )
            assert decided.status_code == 200, decided.text
            assert list(decided.json()["policies"]) == ["onap.restart.tca"]
    finally:
        await stop_server(live, task)
    assert "store closed" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
