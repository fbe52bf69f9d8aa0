"""The operator's commands: delete, policies, decide, subscribe, unsubscribe, subscribers, tail."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.cli.conftest import TCA_TYPE, Cli
from tests.conftest import LiveServer, load_policy, wait_for

SCRIPT = Path(sys.executable).with_name("policy-pubsub")
SUBSCRIPTIONS = "/decision/v1/subscription"
TOPIC = "policies_DCAE_tca_tca-1"
RESTART = '{"policy-id": "onap.restart.tca"}'


async def push(client: httpx.AsyncClient, *policies: dict[str, Any]) -> int:
    """Deploy through the API; the new revision."""
    answer = await client.post("/pap/v1/policies", json={"policies": list(policies)})
    assert answer.status_code == 200, answer.text
    revision: int = answer.json()["revision"]
    return revision


async def subscribe(
    client: httpx.AsyncClient, subscriber_id: str, topic: str, *filters: dict[str, Any]
) -> None:
    answer = await client.post(
        f"{SUBSCRIPTIONS}/{subscriber_id}",
        json={"subscriber_topic": topic, "policy-filters": list(filters)},
    )
    assert answer.status_code == 201, answer.text


async def test_delete_undeploys_and_reports(cli: Cli, client: httpx.AsyncClient) -> None:
    """`delete` undeploys the policy and prints it, the revision and who was notified."""
    await subscribe(client, "tca-1", TOPIC, {"policy-type": TCA_TYPE})
    revision = await push(client, load_policy("onap.restart.tca"))
    result = await cli("delete", "onap.restart.tca")
    assert result.code == 0, result.explain()
    assert result.out.splitlines() == [
        "undeployed onap.restart.tca 1.0.0",
        f"revision {revision + 1}; 1 subscriber notified",
    ]
    assert (await client.get("/pap/v1/policies/onap.restart.tca")).status_code == 404


async def test_delete_json_prints_the_servers_answer(cli: Cli, client: httpx.AsyncClient) -> None:
    """`delete --json` prints the server's answer, which parses."""
    await push(client, load_policy("onap.restart.tca"))
    result = await cli("delete", "onap.restart.tca", "--json")
    assert result.code == 0, result.explain()
    answer = result.json()
    assert answer["undeployed"] == [{"policy-id": "onap.restart.tca", "policy-version": "1.0.0"}]


async def test_delete_unknown_policy_is_the_servers_404(cli: Cli) -> None:
    """Deleting what is not deployed exits 1 with the server's 404 sentence."""
    result = await cli("delete", "x")
    assert (result.code, result.out) == (1, "")
    assert result.err == "policy-pubsub: 404: No policy 'x'.\n"


async def test_policies_prints_a_table(cli: Cli, client: httpx.AsyncClient) -> None:
    """`policies` prints id, version and type of each deployed policy, sorted by id."""
    await push(client, load_policy("onap.scaleout.tca"), load_policy("guard.minmax.vdns"))
    result = await cli("policies")
    assert result.code == 0, result.explain()
    assert [line.split() for line in result.out.splitlines()] == [
        ["POLICY-ID", "VERSION", "TYPE"],
        ["guard.minmax.vdns", "1.0.0", "onap.policies.controlloop.guard.common.MinMax"],
        ["onap.scaleout.tca", "1.0.0", TCA_TYPE],
    ]


async def test_policies_json_and_one_policy(cli: Cli, client: httpx.AsyncClient) -> None:
    """`policies --json` is the server's listing; `policies ID` prints that policy's JSON."""
    await push(client, load_policy("onap.restart.tca"))
    listing = await cli("policies", "--json")
    assert listing.json() == (await client.get("/pap/v1/policies")).json()
    one = await cli("policies", "onap.restart.tca")
    assert one.code == 0, one.explain()
    assert one.json() == load_policy("onap.restart.tca")


async def test_policies_on_an_empty_server(cli: Cli) -> None:
    """With nothing deployed, `policies` says so, and `policies ID` is the server's 404."""
    assert (await cli("policies")).out == "no policy is deployed\n"
    missing = await cli("policies", "onap.restart.tca")
    assert missing.code == 1
    assert missing.err == "policy-pubsub: 404: No policy 'onap.restart.tca'.\n"


async def test_decide_answers_the_union_of_the_filters(cli: Cli, client: httpx.AsyncClient) -> None:
    """`decide` with two --filter options lists the policies matching either of them."""
    await push(
        client,
        load_policy("onap.restart.tca"),
        load_policy("onap.vfirewall.tca"),
        load_policy("guard.minmax.vdns"),
    )
    result = await cli(
        "decide", "--filter", RESTART, "--filter", '{"policy-type": "onap.policies.controlloop.*"}'
    )
    assert result.code == 0, result.explain()
    assert [line.split()[:2] for line in result.out.splitlines()] == [
        ["POLICY-ID", "VERSION"],
        ["guard.minmax.vdns", "1.0.0"],
        ["onap.restart.tca", "1.0.0"],
    ]


async def test_decide_json_abbrev(cli: Cli, client: httpx.AsyncClient) -> None:
    """`decide --json --abbrev` prints the decision answer with only type and metadata."""
    await push(client, load_policy("onap.restart.tca"))
    result = await cli("decide", "--filter", RESTART, "--json", "--abbrev")
    assert result.code == 0, result.explain()
    assert result.json() == {
        "policies": {
            "onap.restart.tca": {
                "type": TCA_TYPE,
                "metadata": {"policy-id": "onap.restart.tca", "policy-version": "1.0.0"},
            }
        }
    }
    nothing = await cli("decide", "--filter", '{"policy-id": "nope"}')
    assert nothing.out == "no deployed policy matches\n"


async def test_subscribe_creates_then_updates(cli: Cli, client: httpx.AsyncClient) -> None:
    """`subscribe` stores the subscription with its ONAP names and says whether it was new,
    the revision and the policies it matches now.
    """
    await push(client, load_policy("onap.restart.tca"))
    args = ["subscribe", "tca-1", "--topic", TOPIC, "--filter", RESTART]
    names = ["--onap-name", "DCAE", "--onap-component", "tca", "--onap-instance", "tca-1"]
    created = await cli(*args, *names)
    assert created.code == 0, created.explain()
    record = (await client.get(f"{SUBSCRIPTIONS}/tca-1")).json()
    assert (record["ONAPName"], record["ONAPComponent"], record["ONAPInstance"]) == (
        "DCAE",
        "tca",
        "tca-1",
    )
    assert record["policy-filters"] == [{"policy-id": "onap.restart.tca"}]
    assert created.out.splitlines() == [
        f"created subscription tca-1 on topic {TOPIC} at revision {record['revision']}",
        "policies now: onap.restart.tca 1.0.0",
    ]
    updated = await cli(*args, "--filter", '{"policy-id": "other"}', "--json")
    assert updated.code == 0, updated.explain()
    answer = updated.json()
    assert answer["revision"] > record["revision"]
    assert answer["policy-filters"] == [{"policy-id": "onap.restart.tca"}, {"policy-id": "other"}]
    again = await cli(*args)
    assert again.out.startswith("updated subscription tca-1")


async def test_subscribe_refused_by_the_server(cli: Cli, client: httpx.AsyncClient) -> None:
    """A topic the server refuses exits 1 with its 400 sentence, and nothing is stored."""
    result = await cli("subscribe", "tca-1", "--topic", "no spaces", "--filter", RESTART)
    assert result.code == 1
    assert result.err.startswith("policy-pubsub: 400: subscriber_topic: ")
    assert (await client.get(f"{SUBSCRIPTIONS}/tca-1")).status_code == 404


async def test_unsubscribe_removes_the_subscription(cli: Cli, client: httpx.AsyncClient) -> None:
    """`unsubscribe` deletes the subscription; a second time it is the server's 404."""
    await subscribe(client, "tca-1", TOPIC, {"policy-type": TCA_TYPE})
    result = await cli("unsubscribe", "tca-1", "--json")
    assert result.code == 0, result.explain()
    assert result.json() == {"subscriber_id": "tca-1", "unsubscribed": True}
    assert (await client.get(f"{SUBSCRIPTIONS}/tca-1")).status_code == 404
    again = await cli("unsubscribe", "tca-1")
    assert (again.code, again.err) == (1, "policy-pubsub: 404: No subscription 'tca-1'.\n")


async def test_subscribers_table_with_topic_and_last_revision(
    cli: Cli, client: httpx.AsyncClient
) -> None:
    """`subscribers` lists id, topic, filters and the revision last published to each;
    --topic narrows the list.
    """
    await subscribe(client, "tca-1", TOPIC, {"policy-id": ["onap.restart.tca"]})
    await subscribe(client, "fw-1", "fw", {"policy-type": TCA_TYPE})
    revision = await push(client, load_policy("onap.vfirewall.tca"))  # only fw-1 matches
    result = await cli("subscribers")
    assert result.code == 0, result.explain()
    rows = [line.split() for line in result.out.splitlines()]
    assert rows[0] == ["SUBSCRIBER-ID", "TOPIC", "FILTERS", "LAST-REVISION"]
    assert rows[1] == ["fw-1", "fw", f'{{"policy-type":"{TCA_TYPE}"}}', str(revision)]
    assert rows[2][:3] == ["tca-1", TOPIC, '{"policy-id":["onap.restart.tca"]}']
    assert int(rows[2][3]) < revision
    only = await cli("subscribers", "--topic", "fw", "--json")
    assert [s["subscriber_id"] for s in only.json()["subscriptions"]] == ["fw-1"]
    assert (await cli("subscribers", "--topic", "nobody")).out == "no subscription matches\n"


async def test_subscribers_stale(server: LiveServer, cli: Cli, client: httpx.AsyncClient) -> None:
    """`subscribers --stale 0` lists only the subscriptions whose topic has unread messages."""
    await subscribe(client, "tca-1", TOPIC, {"policy-type": TCA_TYPE})
    await subscribe(client, "fw-1", "fw", {"policy-type": TCA_TYPE})
    read = await client.get("/events/fw/g/c1", params={"timeout": 0})
    assert read.status_code == 200 and len(read.json()) == 1

    async def only_tca_is_stale() -> bool:
        answer = await client.get(SUBSCRIPTIONS, params={"stale": 0})
        return [s["subscriber_id"] for s in answer.json()["subscriptions"]] == ["tca-1"]

    await wait_for(only_tca_is_stale)
    result = await cli("subscribers", "--stale", "0")
    assert result.code == 0, result.explain()
    assert [line.split()[0] for line in result.out.splitlines()] == ["SUBSCRIBER-ID", "tca-1"]


async def test_tail_prints_raw_messages_and_stops_at_max_messages(
    cli: Cli, client: httpx.AsyncClient
) -> None:
    """`tail --json --max-messages 2` prints the topic's first two messages, one per line as
    the router holds them, from the oldest, and exits 0.
    """
    await subscribe(client, "tca-1", TOPIC, {"policy-type": TCA_TYPE})
    await push(client, load_policy("onap.restart.tca"))
    await push(client, load_policy("onap.scaleout.tca"))
    result = await cli("tail", TOPIC, "--json", "--max-messages", "2", "--timeout-ms", "5000")
    assert result.code == 0, result.explain()
    snapshots = result.json_lines()
    assert [s["event"] for s in snapshots] == ["subscribe", "update"]
    assert list(snapshots[1]["policies"]) == ["onap.restart.tca"]


async def test_tail_group_consumes_only_what_it_printed(
    cli: Cli, client: httpx.AsyncClient
) -> None:
    """With --group, a run stopped by --max-messages consumes only what it printed, so the
    next run of the group goes on from there.
    """
    await subscribe(client, "tca-1", TOPIC, {"policy-type": TCA_TYPE})
    await push(client, load_policy("onap.restart.tca"))
    args = ["tail", TOPIC, "--group", "ops", "--max-messages", "1", "--json"]
    first, second = await cli(*args), await cli(*args)
    assert [json.loads(r.out)["event"] for r in (first, second)] == ["subscribe", "update"]


async def test_tail_pretty_prints_by_default(cli: Cli, client: httpx.AsyncClient) -> None:
    """Without --json, each message is printed as indented JSON."""
    await subscribe(client, "tca-1", TOPIC, {"policy-type": TCA_TYPE})
    result = await cli("tail", TOPIC, "--max-messages", "1")
    assert result.code == 0, result.explain()
    assert result.out.startswith('{\n  "subscriber_id": "tca-1",\n')
    assert json.loads(result.out)["event"] == "subscribe"


async def test_tail_unknown_topic_is_exit_1(cli: Cli) -> None:
    """Tailing a topic that does not exist exits 1 with the router's 404."""
    result = await cli("tail", "nobody-here")
    assert (result.code, result.out) == (1, "")
    assert result.err == "policy-pubsub: 404: No such topic exists.-[nobody-here]\n"


async def test_tail_prints_as_messages_arrive_and_ctrl_c_exits_0(
    server: LiveServer, client: httpx.AsyncClient
) -> None:
    """The console script prints each message as it arrives, and Ctrl-C (SIGINT) ends it with
    status 0 and nothing on stderr.
    """
    await subscribe(client, "tca-1", TOPIC, {"policy-type": TCA_TYPE})
    process = await asyncio.create_subprocess_exec(
        str(SCRIPT),
        "tail",
        TOPIC,
        "--json",
        "--url",
        server.url,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        first = await asyncio.wait_for(process.stdout.readline(), 15)
        assert json.loads(first)["event"] == "subscribe"
        await push(client, load_policy("onap.restart.tca"))
        second = await asyncio.wait_for(process.stdout.readline(), 15)
        assert json.loads(second)["event"] == "update"
        os.kill(process.pid, signal.SIGINT)
        rest, err = await asyncio.wait_for(process.communicate(), 15)
    finally:
        if process.returncode is None:
            os.kill(process.pid, signal.SIGKILL)
            await process.wait()
    assert process.returncode == 0
    assert (rest, err) == (b"", b"")
