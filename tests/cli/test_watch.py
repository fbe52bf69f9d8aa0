"""``policy-pubsub watch``: subscribe or attach, then print each change as it arrives.

The ``server`` fixture runs uvicorn in the test's own event loop, so the command runs
in-process in a worker thread (``asyncio.to_thread``) and its output is read from ``capsys``
once it has exited. While it runs, the test watches the server instead: the command is ready
for the next push when its consumer group has read everything and its next poll is held.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest

from policy_pubsub.cli.common import URL_ENV
from policy_pubsub.config import Settings
from tests.api.helpers import push, subscribe, tosca, undeploy
from tests.cli.conftest import Outcome, run_main
from tests.client.conftest import group_lag
from tests.conftest import LiveServer, make_settings, wait_for
from tests.processes import free_port

TOPIC = "policies_DCAE_tca_tca-1"
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
RUN_TIMEOUT = 20.0


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """One store is enough: the command line is a client of the HTTP API."""
    return make_settings(tmp_path)


@pytest.fixture(autouse=True)
def no_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A POLICY_PUBSUB_URL of the developer's shell must not steer the tests."""
    monkeypatch.delenv(URL_ENV, raising=False)


class Watch:
    """``policy-pubsub watch ARGS...`` running in a worker thread."""

    def __init__(self, capsys: pytest.CaptureFixture[str], *args: str) -> None:
        self._capsys = capsys
        capsys.readouterr()
        self.task = asyncio.create_task(asyncio.to_thread(run_main, ["watch", *args]))

    async def ready(self, server: LiveServer, client: httpx.AsyncClient, group: str) -> None:
        """Wait until it has read everything on its topic and holds its next poll."""

        async def waiting() -> bool:
            if self.task.done():
                return True
            held = server.state.router.held_reads == 1
            return held and await group_lag(client, TOPIC, group) == 0

        await wait_for(waiting, timeout=10)
        if self.task.done():
            pytest.fail(f"watch ended early: {(await self.finish()).explain()}")

    async def finish(self) -> Outcome:
        code = await asyncio.wait_for(self.task, RUN_TIMEOUT)
        captured = self._capsys.readouterr()
        return Outcome(code, captured.out, captured.err)


async def run(capsys: pytest.CaptureFixture[str], *args: str) -> Outcome:
    return await Watch(capsys, *args).finish()


def strip_times(text: str) -> list[str]:
    """The output's lines with each leading timestamp (which must be there) taken off."""
    lines = []
    for line in text.splitlines():
        if line.startswith("  "):
            lines.append(line)
            continue
        match = re.match(rf"^({STAMP}) (.*)$", line)
        assert match, line
        lines.append(match.group(2))
    return lines


async def test_watch_subscribes_and_prints_each_change(
    server: LiveServer, client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --filter it creates the subscription, prints its starting policies, then each
    added, updated and removed policy with the revision and time, and exits 0 after
    --max-changes changes.
    """
    await push(client, tosca("onap.a"))
    watch = Watch(
        capsys,
        "tca-1",
        "--url",
        server.url,
        "--topic",
        TOPIC,
        "--filter",
        '{"policy-id": "onap.*"}',
        "--max-changes",
        "3",
    )
    await watch.ready(server, client, "tca-1.watch")
    subscribed = (await client.get("/decision/v1/subscription/tca-1")).json()
    added = await push(client, tosca("onap.b"))
    await watch.ready(server, client, "tca-1.watch")
    updated = await push(client, tosca("onap.b", "2.0.0"))
    await watch.ready(server, client, "tca-1.watch")
    removed = await undeploy(client, "onap.a")
    outcome = await watch.finish()
    assert outcome.code == 0, outcome.explain()
    assert outcome.err == ""
    assert strip_times(outcome.out) == [
        f"subscribed tca-1 on topic {TOPIC} at revision {subscribed['revision']}: 1 policy",
        "  onap.a 1.0.0",
        f"revision {added['revision']}: added onap.b 1.0.0",
        f"revision {updated['revision']}: updated onap.b 1.0.0 -> 2.0.0",
        f"revision {removed['revision']}: removed onap.a 1.0.0",
    ], outcome.explain()
    assert subscribed["policy-filters"] == [{"policy-id": "onap.*"}]


async def test_watch_attaches_to_an_existing_subscription(
    server: LiveServer, client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --filter it attaches to the subscription as it is (topic, filters, ONAP
    fields), reads as a consumer group of its own, and with --json prints one JSON line for
    the starting policies and one per change.
    """
    await subscribe(
        client, "tca-1", TOPIC, [{"policy-type": "onap.policies.monitoring.*"}], ONAPName="DCAE"
    )
    await push(client, tosca("onap.a", policy_type="onap.policies.monitoring.tcagen2"))
    watch = Watch(capsys, "tca-1", "--url", server.url, "--json", "--max-changes", "1")
    await watch.ready(server, client, "tca-1.watch")
    added = await push(client, tosca("onap.b", policy_type="onap.policies.monitoring.x"))
    outcome = await watch.finish()
    assert outcome.code == 0, outcome.explain()
    start, change = outcome.json_lines()
    assert (start["event"], list(start["added"]), start["removed"]) == ("subscribe", ["onap.a"], [])
    assert change["revision"] == added["revision"]
    assert change["event"] == "update"
    assert change["added"] == {"onap.b": tosca("onap.b", policy_type="onap.policies.monitoring.x")}
    assert (change["updated"], change["removed"]) == ({}, [])
    assert re.fullmatch(STAMP, change["time"])
    record = (await client.get("/decision/v1/subscription/tca-1")).json()
    assert record["subscriber_topic"] == TOPIC
    assert record["policy-filters"] == [{"policy-type": "onap.policies.monitoring.*"}]
    assert record["ONAPName"] == "DCAE"
    groups = (await client.get(f"/topics/{TOPIC}")).json()["consumer_groups"]
    assert [g["name"] for g in groups] == ["tca-1.watch"]


async def test_watch_needs_a_filter_for_a_new_subscription(
    server: LiveServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --filter, an unknown subscriber id is one line on stderr and exit status 1,
    and nothing is created.
    """
    outcome = await run(capsys, "nobody", "--url", server.url)
    assert (outcome.code, outcome.out) == (1, ""), outcome.explain()
    assert outcome.err.count("\n") == 1
    assert outcome.err.startswith("policy-pubsub: there is no subscription 'nobody'")


async def test_watch_reports_a_refused_subscription_and_bad_input(
    server: LiveServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A filter the server refuses exits 1 with the server's reason; a --filter that is not
    JSON exits 2; each is one line on stderr.
    """
    refused = await run(capsys, "x", "--url", server.url, "--filter", '{"policy-name": "a"}')
    assert refused.code == 1, refused.explain()
    assert refused.err.count("\n") == 1
    assert refused.err.startswith("policy-pubsub: the server refused the subscription: ")
    assert "policy-name" in refused.err
    bad = await run(capsys, "x", "--url", server.url, "--filter", "{nope")
    assert bad.code == 2, bad.explain()
    assert bad.err.count("\n") == 1 and "--filter" in bad.err


async def test_watch_reports_an_unreachable_server(capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing listening at --url is exit status 1 with one line saying so."""
    url = f"http://127.0.0.1:{free_port()}"
    outcome = await run(capsys, "tca-1", "--url", url, "--timeout", "2")
    assert (outcome.code, outcome.out) == (1, ""), outcome.explain()
    assert outcome.err.count("\n") == 1
    assert outcome.err.startswith(f"policy-pubsub: cannot reach {url}: ConnectError")


async def test_watch_help_shows_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    """``watch --help`` names its options and shows examples."""
    outcome = await run(capsys, "--help")
    assert outcome.code == 0
    for text in ("--filter JSON", "--max-changes N", "--json", "examples:", "watch tca-1"):
        assert text in outcome.out, text
