"""``GET /metrics``: Prometheus text from a per-app registry, counters that follow what the
server does, and gauges read from the store, the router and the relay at scrape time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from policy_pubsub.metrics import Metrics
from policy_pubsub.routers import OutMessage
from policy_pubsub.store import now_ms
from policy_pubsub.testing import LiveServer, start_server, stop_server
from tests.conftest import make_settings, wait_for
from tests.processes import free_port

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

EXPECTED_FAMILIES = {
    "policy_pubsub_pushes",
    "policy_pubsub_snapshots_published",
    "policy_pubsub_matching_seconds",
    "policy_pubsub_commit_seconds",
    "policy_pubsub_changes_per_commit",
    "policy_pubsub_store_errors",
    "policy_pubsub_router_errors",
    "policy_pubsub_limit_refusals",
    "policy_pubsub_http_requests",
    "policy_pubsub_long_polls_held",
    "policy_pubsub_long_polls_active",
    "policy_pubsub_consumer_lag",
    "policy_pubsub_consumer_lag_total",
    "policy_pubsub_revision",
    "policy_pubsub_subscriptions",
}


@asynccontextmanager
async def serving(directory: Path, **overrides: Any) -> AsyncIterator[LiveServer]:
    directory.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - a test's tmp_path
    live, task = await start_server(make_settings(directory, **overrides))
    try:
        yield live
    finally:
        await stop_server(live, task)


async def scrape(http: httpx.AsyncClient, url: str) -> Samples:
    r = await http.get(f"{url}/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def policy(policy_id: str, version: str = "1.0.0") -> dict[str, Any]:
    return {
        "type": "onap.test",
        "name": policy_id,
        "version": version,
        "metadata": {"policy-id": policy_id, "policy-version": version},
    }


async def test_metrics_are_prometheus_text_and_every_name_is_prefixed(tmp_path: Path) -> None:
    """/metrics parses as the Prometheus text format, holds the documented families, and
    every family and sample name starts with policy_pubsub_.
    """
    async with serving(tmp_path) as server, httpx.AsyncClient(timeout=30) as http:
        r = await http.post(
            f"{server.url}/decision/v1/subscription/s1",
            json={"subscriber_topic": "t1", "policy-filters": [{"policy-id": "p1"}]},
        )
        assert r.status_code == 201
        text = (await http.get(f"{server.url}/metrics")).text
    families = list(text_string_to_metric_families(text))
    names = {family.name for family in families}
    assert names >= EXPECTED_FAMILIES, EXPECTED_FAMILIES - names
    for family in families:
        assert family.name.startswith("policy_pubsub_"), family.name
        for sample in family.samples:
            assert sample.name.startswith("policy_pubsub_"), sample.name


async def test_push_counters_follow_each_outcome(tmp_path: Path) -> None:
    """A push that deploys, the same push again, and a refused push move the deployed,
    unchanged and rejected counts by one each; matching and commit times are observed.
    """
    async with serving(tmp_path) as server, httpx.AsyncClient(timeout=30) as http:
        before = await scrape(http, server.url)
        push = {"policies": [policy("p1")]}
        assert (await http.post(f"{server.url}/pap/v1/policies", json=push)).status_code == 200
        after_deploy = await scrape(http, server.url)
        assert (await http.post(f"{server.url}/pap/v1/policies", json=push)).status_code == 200
        after_same = await scrape(http, server.url)
        bad = await http.post(f"{server.url}/pap/v1/policies", json={"policies": [{"x": 1}]})
        assert bad.status_code == 400
        missing = await http.delete(f"{server.url}/pap/v1/policies/unknown")
        assert missing.status_code == 404
        after_bad = await scrape(http, server.url)

    def pushes(samples: Samples, outcome: str) -> float:
        return value(samples, "policy_pubsub_pushes_total", outcome=outcome)

    assert [pushes(after_deploy, o) - pushes(before, o) for o in ("deployed", "unchanged")] == [
        1,
        0,
    ]
    assert pushes(after_same, "unchanged") - pushes(after_deploy, "unchanged") == 1
    assert pushes(after_same, "deployed") == pushes(after_deploy, "deployed")
    assert pushes(after_bad, "rejected") - pushes(after_same, "rejected") == 2
    assert pushes(after_bad, "failed") == 0
    for histogram in ("policy_pubsub_matching_seconds", "policy_pubsub_commit_seconds"):
        count = f"{histogram}_count"
        assert value(after_deploy, count) == value(before, count) + 1, histogram


async def test_snapshots_counter_counts_subscribe_and_update_snapshots(tmp_path: Path) -> None:
    """A subscribe counts one subscribe snapshot; a push matching two subscribers counts two
    update snapshots, as many as it notified.
    """
    async with serving(tmp_path) as server, httpx.AsyncClient(timeout=30) as http:
        for name in ("s1", "s2"):
            r = await http.post(
                f"{server.url}/decision/v1/subscription/{name}",
                json={"subscriber_topic": f"t-{name}", "policy-filters": [{"policy-id": "p*"}]},
            )
            assert r.status_code == 201
        middle = await scrape(http, server.url)
        r = await http.post(f"{server.url}/pap/v1/policies", json={"policies": [policy("p1")]})
        assert r.json()["notified"] == 2
        after = await scrape(http, server.url)
    snapshots = "policy_pubsub_snapshots_published_total"
    assert value(middle, snapshots, event="subscribe") == 2
    assert value(middle, snapshots, event="update") == 0
    assert value(after, snapshots, event="update") == 2


async def test_held_long_polls_gauge_shows_a_waiting_poll(tmp_path: Path) -> None:
    """While a long-poll waits on an empty topic the held and active gauges read 1; once a
    message answers it they are back to 0.
    """
    async with serving(tmp_path) as server, httpx.AsyncClient(timeout=30) as http:
        assert (await http.post(f"{server.url}/events/t", json={"n": 0})).status_code == 200
        first = await http.get(f"{server.url}/events/t/g/c", params={"timeout": 0})
        assert len(first.json()) == 1
        poll = asyncio.create_task(
            http.get(f"{server.url}/events/t/g/c", params={"timeout": 20000})
        )

        async def held(expected: int) -> bool:
            samples = await scrape(http, server.url)
            return (
                value(samples, "policy_pubsub_long_polls_held") == expected
                and value(samples, "policy_pubsub_long_polls_active") == expected
            )

        await wait_for(lambda: held(1))
        assert (await http.post(f"{server.url}/events/t", json={"n": 1})).status_code == 200
        answer = await asyncio.wait_for(poll, 10)
        assert len(answer.json()) == 1
        await wait_for(lambda: held(0))


async def test_consumer_lag_reports_the_largest_topics_and_a_total(tmp_path: Path) -> None:
    """Consumer lag is reported for at most metrics_lag_topics topics, the largest first,
    plus a total over all subscription topics; reading a topic brings its lag to 0.
    """
    async with (
        serving(tmp_path, metrics_lag_topics=1, metrics_lag_refresh_seconds=0) as server,
        httpx.AsyncClient(timeout=30) as http,
    ):
        for name, topic in (("s1", "small"), ("s2", "big"), ("s3", "big")):
            r = await http.post(
                f"{server.url}/decision/v1/subscription/{name}",
                json={"subscriber_topic": topic, "policy-filters": [{"policy-id": name}]},
            )
            assert r.status_code == 201
        samples = await scrape(http, server.url)
        lags = {
            dict(labels)["topic"]: v
            for (name, labels), v in samples.items()
            if name == "policy_pubsub_consumer_lag"
        }
        assert lags == {"big": 2}
        assert value(samples, "policy_pubsub_consumer_lag_total") == 3
        read = await http.get(f"{server.url}/events/big/g/c", params={"timeout": 0})
        assert len(read.json()) == 2

        async def big_read() -> bool:
            samples = await scrape(http, server.url)
            return (
                value(samples, "policy_pubsub_consumer_lag", topic="big") == 0
                and value(samples, "policy_pubsub_consumer_lag_total") == 1
            )

        await wait_for(big_read)


async def test_outbox_gauges_and_router_errors_where_a_relay_runs(tmp_path: Path) -> None:
    """With a DMaaP router whose MR is down, pushes wait in the outbox: the outbox depth and
    failing gauges show it and a refused router call counts a router error; the MR, a second
    server in this process, keeps its own counts (separate registries).
    """
    async with serving(tmp_path / "mr") as mr:
        overrides = {"router_url": f"dmaap+{mr.url}", "dmaap_timeout_seconds": 2.0}
        async with (
            serving(tmp_path / "pp", **overrides) as server,
            httpx.AsyncClient(timeout=30) as http,
        ):
            r = await http.post(
                f"{server.url}/decision/v1/subscription/s1",
                json={"subscriber_topic": "t1", "policy-filters": [{"policy-id": "p*"}]},
            )
            assert r.status_code == 201

            async def depth(expected: int) -> bool:
                samples = await scrape(http, server.url)
                return value(samples, "policy_pubsub_outbox_depth") == expected

            await wait_for(lambda: depth(0), timeout=10)
            mr_samples = await scrape(http, mr.url)
            mine = await scrape(http, server.url)
            assert ("policy_pubsub_outbox_depth", frozenset()) not in mr_samples
            snapshots = "policy_pubsub_snapshots_published_total"
            assert value(mine, snapshots, event="subscribe") == 1
            assert value(mr_samples, snapshots, event="subscribe") == 0
            mr.server.should_exit = True  # stop the MR; the serving block waits for it

            async def mr_down() -> bool:
                try:
                    await http.get(f"{mr.url}/healthcheck", timeout=1)
                except httpx.TransportError:
                    return True
                return False

            await wait_for(mr_down, timeout=10)
            r = await http.post(f"{server.url}/pap/v1/policies", json={"policies": [policy("p1")]})
            assert r.status_code == 200, r.text
            samples = await scrape(http, server.url)
            assert value(samples, "policy_pubsub_outbox_depth") >= 1
            assert value(samples, "policy_pubsub_outbox_oldest_age_seconds") >= 0
            r = await http.get(f"{server.url}/topics/t1")
            assert r.status_code == 503
            samples = await scrape(http, server.url)
            assert value(samples, "policy_pubsub_router_errors_total") >= 1
            assert value(samples, "policy_pubsub_store_errors_total") == 0

            async def failing() -> bool:
                samples = await scrape(http, server.url)
                return value(samples, "policy_pubsub_outbox_relay_failing") == 1

            await wait_for(failing, timeout=10)


def test_each_metrics_object_has_its_own_registry() -> None:
    """Two Metrics objects count apart: a push counted in one is not seen in the other."""
    one, two = Metrics(), Metrics()
    one.pushed(changed=True, notified=3)
    assert one.registry.get_sample_value("policy_pubsub_pushes_total", {"outcome": "deployed"})
    assert two.registry.get_sample_value("policy_pubsub_pushes_total", {"outcome": "deployed"}) == 0


async def test_the_dead_letter_count_outlives_a_restart_and_the_dead_letters(
    tmp_path: Path,
) -> None:
    """``dead_letters_total`` is a count kept in the store: a restarted server reports the
    dead letter made before, and keeps reporting it once the dead letter is gone, while
    ``dead_letters_kept`` follows the rows.
    """
    overrides = {"router_url": f"dmaap+http://127.0.0.1:{free_port()}"}
    refused = OutMessage("t", "{}", key="s1", revision=1, dedup_id="s1@1")
    async with (
        serving(tmp_path / "pp", **overrides) as server,
        httpx.AsyncClient(timeout=30) as http,
    ):
        await server.state.store.dead_letters.bury(refused, "413", 2, now_ms(), [], {})
        samples = await scrape(http, server.url)
        assert value(samples, "policy_pubsub_dead_letters_total") == 1
        assert value(samples, "policy_pubsub_dead_letters_kept") == 1
    async with (
        serving(tmp_path / "pp", **overrides) as server,
        httpx.AsyncClient(timeout=30) as http,
    ):
        samples = await scrape(http, server.url)
        assert value(samples, "policy_pubsub_dead_letters_total") == 1
        assert await server.state.store.dead_letters.prune(now_ms() + 1) == 1
        samples = await scrape(http, server.url)
        assert value(samples, "policy_pubsub_dead_letters_total") == 1
        assert value(samples, "policy_pubsub_dead_letters_kept") == 0
