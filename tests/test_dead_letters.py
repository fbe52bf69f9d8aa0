"""A snapshot the message router refuses for good, end to end: the server publishes to a DMaaP
MR (a second instance of our server, whose message limit is small) that answers 413 for one
subscriber's snapshot. The other subscribers' snapshots still arrive, the refused one is a
dead letter that the CLI lists, /healthcheck says so, the metrics count it, and once the MR
takes larger messages ``dead-letters --retry`` delivers a fresh snapshot.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli.conftest import run_main
from tests.conftest import (
    LiveServer,
    make_settings,
    start_server,
    stop_server,
    wait_for,
)
from tests.processes import free_port
from tests.test_metrics import scrape, value

MR_LIMIT = 2000  # bytes: the empty and small snapshots fit, the big one does not


def _policy(policy_id: str, padding: int = 0) -> dict[str, Any]:
    return {
        "type": "onap.policies.monitoring.tcagen2",
        "type_version": "1.0.0",
        "properties": {"pad": "x" * padding},
        "name": policy_id,
        "version": "1.0.0",
        "metadata": {"policy-id": policy_id, "policy-version": "1.0.0"},
    }


@asynccontextmanager
async def _serving(directory: Path, **overrides: Any) -> AsyncIterator[LiveServer]:
    directory.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - a test's tmp_path
    live, task = await start_server(make_settings(directory, **overrides))
    try:
        yield live
    finally:
        await stop_server(live, task)


async def _cli(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> str:
    """Run ``policy-pubsub ARGS --url URL`` in-process; fail unless it exits 0; its stdout."""
    capsys.readouterr()
    code = await asyncio.to_thread(run_main, [*args, "--url", url])
    out, err = capsys.readouterr()
    assert code == 0, f"exit {code}: {out}{err}"
    return out


async def _snapshot_on(http: httpx.AsyncClient, mr: LiveServer, topic: str, policy: str) -> bool:
    """Whether the MR's topic holds a snapshot carrying ``policy`` (read by a group of its own)."""
    r = await http.get(f"{mr.url}/events/{topic}/check/c", params={"timeout": 0, "limit": 100})
    if r.status_code != 200:
        return False
    return any(policy in json.loads(m)["policies"] for m in r.json())


async def test_a_refused_snapshot_is_a_dead_letter_that_blocks_nobody_and_can_be_retried(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A's snapshot of a big policy is refused (413) by the MR for good: B's later snapshot
    still arrives; the CLI lists A's dead letter as WAITING; /healthcheck is 503 naming A
    (relay ok); the counter says 1. With the MR's limit raised, ``--retry`` sends A a fresh
    snapshot that arrives; the dead letter is gone, health is 200, the counter stays 1.
    (SQLite; tests/relay/test_dead_letters.py runs the store's side on PostgreSQL too.)
    """
    port = free_port()
    mr_dir = tmp_path / "mr"
    mr_cm = _serving(mr_dir, port=port, max_message_bytes=MR_LIMIT)
    mr = await mr_cm.__aenter__()
    try:
        overrides = {"router_url": f"dmaap+{mr.url}"}
        async with (
            _serving(tmp_path / "pp", **overrides) as server,
            httpx.AsyncClient(timeout=30) as http,
        ):
            for name, wanted in (("a", "big"), ("b", "small")):
                r = await http.post(
                    f"{server.url}/decision/v1/subscription/{name}",
                    json={
                        "subscriber_topic": f"t-{name}",
                        "policy-filters": [{"policy-id": wanted}],
                    },
                )
                assert r.status_code == 201, r.text
            r = await http.post(
                f"{server.url}/pap/v1/policies", json={"policies": [_policy("big", 5000)]}
            )
            assert r.status_code == 200, r.text
            refused_revision = r.json()["revision"]
            r = await http.post(
                f"{server.url}/pap/v1/policies", json={"policies": [_policy("small")]}
            )
            assert r.status_code == 200, r.text
            await wait_for(lambda: _snapshot_on(http, mr, "t-b", "small"), timeout=10)

            listed = json.loads(await _cli(capsys, server.url, "dead-letters", "--json"))
            [letter] = listed["dead_letters"]
            assert (letter["subscriber_id"], letter["topic"]) == ("a", "t-a")
            assert letter["revision"] == refused_revision
            assert letter["size"] > MR_LIMIT and letter["superseded_by"] is None
            assert letter["reason"].startswith("message router answered 413")
            table = await _cli(capsys, server.url, "dead-letters")
            assert "WAITING" in table and "t-a" in table

            health = await http.get(f"{server.url}/healthcheck")
            assert health.status_code == 503, health.text
            details = health.json()["details"]
            assert details["relay"] == "ok" and details["outbox"]["depth"] == 0
            assert details["dead_letters"].startswith("1 subscriber has had nothing")
            assert "413" not in health.text, "the router's words are for the log and admins"
            samples = await scrape(http, server.url)
            assert value(samples, "policy_pubsub_dead_letters_total") == 1
            assert value(samples, "policy_pubsub_dead_letters_kept") == 1

            # The operator raises the MR's limit (a restart on the same port and store).
            await mr_cm.__aexit__(None, None, None)
            mr_cm = _serving(mr_dir, port=port)
            mr = await mr_cm.__aenter__()
            out = await _cli(capsys, server.url, "dead-letters", "--retry")
            assert "fresh snapshot for 1 subscriber (a); 1 dead letter removed" in out
            await wait_for(lambda: _snapshot_on(http, mr, "t-a", "big"), timeout=10)
            assert "no dead letters" in await _cli(capsys, server.url, "dead-letters")
            health = await http.get(f"{server.url}/healthcheck")
            assert health.status_code == 200, health.text
            assert health.json()["details"]["dead_letters"] == "ok"
            samples = await scrape(http, server.url)
            assert value(samples, "policy_pubsub_dead_letters_total") == 1
            assert value(samples, "policy_pubsub_dead_letters_kept") == 0
    finally:
        await mr_cm.__aexit__(None, None, None)


def test_subscriber_ids_without_retry_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """Naming subscribers without ``--retry`` is refused before anything is sent (exit 2)."""
    assert run_main(["dead-letters", "tca-1", "--url", "http://127.0.0.1:9"]) == 2
    assert "SUBSCRIBER_ID goes with --retry" in capsys.readouterr().err
