"""Expiring stale subscriptions (``--expire-stale-after``): those whose topic nobody reads are
unsubscribed, with a revision and a WARNING each; those that are read stay.
"""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from policy_pubsub.stale import StaleExpiry
from policy_pubsub.testing import start_server, stop_server
from tests.conftest import make_settings, wait_for

SUBSCRIPTIONS = "/decision/v1/subscription"


async def _subscribe(http: httpx.AsyncClient, subscriber_id: str, topic: str) -> int:
    r = await http.post(
        f"{SUBSCRIPTIONS}/{subscriber_id}",
        json={"subscriber_topic": topic, "policy-filters": [{"policy-id": "p*"}]},
    )
    assert r.status_code == 201, r.text
    revision: int = r.json()["revision"]
    return revision


async def test_expiry_removes_a_subscription_nobody_reads_and_keeps_one_that_is_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With expire_stale_after_seconds set, the subscription whose topic nobody read is
    unsubscribed (a new revision, a WARNING naming it and its topic, a metric), and the one
    whose topic was read is kept.
    """
    caplog.set_level(logging.WARNING, logger="policy_pubsub.stale")
    # First without expiry: subscribe both and read one topic, with no race against expiry.
    live, task = await start_server(make_settings(tmp_path))
    try:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
            await _subscribe(http, "read-1", "topic-read")
            last = await _subscribe(http, "unread-1", "topic-unread")
            delivered = await http.get("/events/topic-read/g/c", params={"timeout": 0})
            assert len(delivered.json()) == 1
    finally:
        await stop_server(live, task)

    settings = make_settings(
        tmp_path, expire_stale_after_seconds=0.05, stale_check_interval_seconds=0.05
    )
    live, task = await start_server(settings)
    try:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:

            async def unread_gone() -> bool:
                r = await http.get(f"{SUBSCRIPTIONS}/unread-1")
                return r.status_code == 404

            await wait_for(unread_gone, timeout=10)
            assert (await http.get(f"{SUBSCRIPTIONS}/read-1")).status_code == 200
            assert live.state.service.revision == last + 1
            metrics = (await http.get("/metrics")).text
            assert "policy_pubsub_stale_subscriptions_expired_total 1.0" in metrics
    finally:
        await stop_server(live, task)
    warnings = [r.getMessage() for r in caplog.records if r.name == "policy_pubsub.stale"]
    assert len(warnings) == 1
    assert "unread-1" in warnings[0] and "topic-unread" in warnings[0]


async def test_expire_once_skips_what_is_read_and_what_is_not_old_enough(tmp_path: Path) -> None:
    """One pass removes only subscriptions whose topic's unread message is older than the
    threshold: a fresh one and one whose topic was read both stay.
    """
    live, task = await start_server(make_settings(tmp_path))
    try:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
            await _subscribe(http, "read-1", "topic-read")
            await _subscribe(http, "fresh-1", "topic-fresh")
            delivered = await http.get("/events/topic-read/g/c", params={"timeout": 0})
            assert len(delivered.json()) == 1
            service, store = live.state.service, live.state.store
            patient = StaleExpiry(service, store, after=3600, interval=60)
            assert await patient.expire_once() == []
            eager = StaleExpiry(service, store, after=0.001, interval=60)

            async def fresh_removed() -> bool:
                return await eager.expire_once() == ["fresh-1"]

            await wait_for(fresh_removed)
            assert (await http.get(f"{SUBSCRIPTIONS}/read-1")).status_code == 200
            assert (await http.get(f"{SUBSCRIPTIONS}/fresh-1")).status_code == 404
    finally:
        await stop_server(live, task)
