"""Crash and shutdown tests against a real server process: "acknowledged means durable".

The crash test pushes policies from concurrent tasks, kills the server with SIGKILL at a
random moment while pushes are in flight, restarts it on the same SQLite file and checks that
every push that got a 2xx answer is deployed and in every matching subscriber's newest
snapshot. The random delays come from one seed, printed at the start; set
``POLICY_PUBSUB_TEST_SEED`` to replay a run.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import wait_for
from tests.processes import ServerProcess

pytestmark = pytest.mark.slow

CYCLES = 4
PUSHERS = 3  # pusher k owns the ids test.policy.N with N % PUSHERS == k
MAX_PUSHES_PER_CYCLE = 300
KILL_DELAY = (0.05, 0.6)  # seconds after the pushers start
NEW_VERSION_ODDS = 0.35  # else a push deploys a new policy id
BATCH_ODDS = 0.2  # a push of two policies in one request
CYCLE_DEADLINE = 20.0
TYPE_EVEN = "onap.policies.test.Even"
TYPE_ODD = "onap.policies.test.Odd"


@dataclass(frozen=True)
class Subscriber:
    subscriber_id: str
    topic: str
    filters: list[dict[str, Any]]

    def matches(self, policy_id: str, policy_type: str) -> bool:
        """API.md's semantics: any filter; listed id OR listed type; ``*`` ends a prefix."""
        return any(
            _listed(f.get("policy-id"), policy_id) or _listed(f.get("policy-type"), policy_type)
            for f in self.filters
        )


def _listed(values: str | list[str] | None, value: str) -> bool:
    if values is None:
        return False
    for wanted in [values] if isinstance(values, str) else values:
        if wanted.endswith("*") and value.startswith(wanted[:-1]):
            return True
        if wanted == value:
            return True
    return False


SUBSCRIBERS = [
    Subscriber("dur-all", "durability.all", [{"policy-id": "test.policy.*"}]),
    # Two subscribers share one topic, as ONAP allows; each reads only its own snapshots.
    Subscriber("dur-even", "durability.shared", [{"policy-type": TYPE_EVEN}]),
    Subscriber(
        "dur-some",
        "durability.shared",
        [{"policy-id": [f"test.policy.{n}" for n in range(0, 90, 3)]}],
    ),
]


def policy_type(number: int) -> str:
    return TYPE_EVEN if number % 2 == 0 else TYPE_ODD


def make_policy(number: int, version: int, tag: str) -> dict[str, Any]:
    policy_id = f"test.policy.{number}"
    return {
        "type": policy_type(number),
        "type_version": "1.0.0",
        "properties": {"tag": tag, "number": number, "threshold": version * 10},
        "name": policy_id,
        "version": f"1.0.{version}",
        "metadata": {"policy-id": policy_id, "policy-version": f"1.0.{version}"},
    }


def version_of(policy: dict[str, Any]) -> int:
    return int(str(policy["metadata"]["policy-version"]).rsplit(".", 1)[1])


@dataclass
class Ledger:
    """What was pushed, kept across cycles: every body sent and every acknowledgement."""

    sent: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    next_version: dict[str, int] = field(default_factory=dict)
    acked: dict[str, int] = field(default_factory=dict)  # policy id -> newest acked version
    acked_revision: dict[str, int] = field(default_factory=dict)  # ... and its revision
    owned: list[list[int]] = field(default_factory=lambda: [[] for _ in range(PUSHERS)])
    next_number: list[int] = field(default_factory=lambda: list(range(PUSHERS)))
    errors: list[str] = field(default_factory=list)
    in_flight: int = 0
    pushes: int = 0

    def prepare(self, pusher: int, rng: random.Random, tag: str) -> list[dict[str, Any]]:
        """The policies of one push by ``pusher``: new versions of its ids or new ids."""
        count = 2 if rng.random() < BATCH_ODDS else 1
        numbers: list[int] = []
        while len(numbers) < count:
            own = self.owned[pusher]
            if own and rng.random() < NEW_VERSION_ODDS:
                number = rng.choice(own)
                if number in numbers:
                    continue
            else:
                number = self.next_number[pusher]
                self.next_number[pusher] += PUSHERS
                own.append(number)
            numbers.append(number)
        bodies = []
        for number in numbers:
            policy_id = f"test.policy.{number}"
            version = self.next_version.get(policy_id, 0) + 1
            self.next_version[policy_id] = version
            body = make_policy(number, version, tag)
            self.sent[(policy_id, version)] = body
            self.types[policy_id] = body["type"]
            bodies.append(body)
        return bodies

    def acknowledge(self, bodies: list[dict[str, Any]], answer: dict[str, Any]) -> None:
        for body in bodies:
            policy_id = body["metadata"]["policy-id"]
            version = version_of(body)
            if version > self.acked.get(policy_id, 0):
                self.acked[policy_id] = version
                self.acked_revision[policy_id] = int(answer["revision"])


async def pusher(
    index: int, http: httpx.AsyncClient, ledger: Ledger, rng: random.Random, cycle: int
) -> None:
    """Push until the server goes away (or the cycle's budget is spent)."""
    while ledger.pushes < MAX_PUSHES_PER_CYCLE:
        ledger.pushes += 1
        bodies = ledger.prepare(index, rng, f"cycle{cycle}-push{ledger.pushes}")
        ledger.in_flight += 1
        try:
            answer = await http.post("/pap/v1/policies", json={"policies": bodies})
        except httpx.TransportError:
            return  # the server was killed: this push is unacknowledged
        finally:
            ledger.in_flight -= 1
        if not answer.is_success:
            ledger.errors.append(f"push {bodies} answered {answer.status_code}: {answer.text}")
            return
        ledger.acknowledge(bodies, answer.json())


async def subscribe_all(http: httpx.AsyncClient) -> None:
    for subscriber in SUBSCRIBERS:
        answer = await http.post(
            f"/decision/v1/subscription/{subscriber.subscriber_id}",
            json={
                "subscriber_topic": subscriber.topic,
                "ONAPName": "DCAE",
                "ONAPComponent": "durability",
                "ONAPInstance": subscriber.subscriber_id,
                "policy-filters": subscriber.filters,
            },
        )
        assert answer.status_code == 201, answer.text


async def read_topic(http: httpx.AsyncClient, topic: str, group: str) -> list[dict[str, Any]]:
    """Every message retained on ``topic``, read by a fresh consumer group until ``[]``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    found: list[dict[str, Any]] = []
    while True:
        answer = await http.get(
            f"/events/{topic}/{group}/verifier", params={"timeout": 300, "limit": 10000}
        )
        assert answer.status_code == 200, answer.text
        batch = answer.json()
        if not batch:
            return found
        found.extend(json.loads(text) for text in batch)
        assert loop.time() < deadline, f"{topic} was still answering messages after 15 s"


async def verify(http: httpx.AsyncClient, ledger: Ledger, group: str, context: str) -> None:
    """Every acknowledged push is deployed and in each matching subscriber's newest snapshot."""
    # Deployed: at least the newest acknowledged version, and exactly a body that was sent.
    for policy_id, acked in sorted(ledger.acked.items()):
        answer = await http.get(f"/pap/v1/policies/{policy_id}")
        assert answer.status_code == 200, f"{context}: acked {policy_id} v{acked} is gone"
        deployed = answer.json()
        version = version_of(deployed)
        assert version >= acked, f"{context}: {policy_id} is v{version}, acked v{acked}"
        assert deployed == ledger.sent[(policy_id, version)], f"{context}: {policy_id} body"
    everything = await decide(http, [{"policy-id": "test.policy.*"}])
    for policy_id, body in everything.items():
        sent = ledger.sent.get((policy_id, version_of(body)))
        assert body == sent, f"{context}: {policy_id} is deployed with a body never sent"

    messages: dict[str, list[dict[str, Any]]] = {}
    for topic in sorted({s.topic for s in SUBSCRIBERS}):
        messages[topic] = await read_topic(http, topic, group)
    for subscriber in SUBSCRIBERS:
        where = f"{context}: subscriber {subscriber.subscriber_id}"
        snapshots = [
            m for m in messages[subscriber.topic] if m["subscriber_id"] == subscriber.subscriber_id
        ]
        assert snapshots, f"{where}: no snapshot on {subscriber.topic}"
        revisions = [s["revision"] for s in snapshots]
        assert all(a < b for a, b in itertools.pairwise(revisions)), (
            f"{where}: revisions do not strictly increase: {revisions}"
        )
        newest = snapshots[-1]
        assert newest["subscriber_topic"] == subscriber.topic
        assert newest["policy-filters"] == subscriber.filters
        policies = newest["policies"]
        matching = [pid for pid in ledger.acked if subscriber.matches(pid, ledger.types[pid])]
        for policy_id in matching:
            assert policy_id in policies, f"{where}: acked {policy_id} missing from the snapshot"
            body = policies[policy_id]
            assert version_of(body) >= ledger.acked[policy_id], f"{where}: {policy_id} is stale"
            assert body == ledger.sent[(policy_id, version_of(body))], f"{where}: {policy_id}"
        if matching:
            needed = max(ledger.acked_revision[pid] for pid in matching)
            assert newest["revision"] >= needed, (
                f"{where}: newest snapshot at revision {newest['revision']}, "
                f"an acknowledged push reached revision {needed}"
            )
        assert policies == await decide(http, subscriber.filters), (
            f"{where}: the newest snapshot differs from what the decision API answers"
        )


async def decide(http: httpx.AsyncClient, filters: list[dict[str, Any]]) -> dict[str, Any]:
    answer = await http.post(
        "/decision/v1", json={"ONAPName": "DCAE", "action": "configure", "policy-filters": filters}
    )
    assert answer.status_code == 200, answer.text
    policies: dict[str, Any] = answer.json()["policies"]
    return policies


def client(server: ServerProcess) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, timeout=httpx.Timeout(10.0), trust_env=False)


async def test_kill_9_loses_no_acknowledged_push(tmp_path: Path) -> None:
    """After SIGKILL during concurrent pushes and a restart, every acknowledged push is deployed
    and in the newest snapshot of every subscriber it matches, with revisions increasing.
    """
    seed = int(os.environ.get("POLICY_PUBSUB_TEST_SEED") or random.SystemRandom().getrandbits(32))
    print(f"durability seed {seed} (POLICY_PUBSUB_TEST_SEED={seed} replays it)")
    rng = random.Random(seed)
    ledger = Ledger()
    server = ServerProcess(tmp_path / "store.db", tmp_path / "server.log")
    try:
        await server.start()
        async with client(server) as http:
            await subscribe_all(http)
        for cycle in range(1, CYCLES + 1):
            context = f"seed {seed}, cycle {cycle}"
            delay = rng.uniform(*KILL_DELAY)
            ledger.pushes = 0
            acked_before = len(ledger.acked)
            async with client(server) as http:
                tasks = [
                    asyncio.create_task(
                        pusher(k, http, ledger, random.Random(rng.getrandbits(32)), cycle)
                    )
                    for k in range(PUSHERS)
                ]
                try:
                    await asyncio.sleep(delay)  # the random moment of the crash
                    in_flight = ledger.in_flight
                    await server.kill(signal.SIGKILL)
                    done, pending = await asyncio.wait(tasks, timeout=CYCLE_DEADLINE)
                    assert not pending, f"{context}: pushers still running after the kill"
                finally:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
            for task in done:
                task.result()
            assert not ledger.errors, f"{context}: {ledger.errors[:3]}"
            print(
                f"cycle {cycle}: killed after {delay:.3f} s with {in_flight} pushes in flight; "
                f"{ledger.pushes} pushes sent, {len(ledger.acked)} policy ids acknowledged "
                f"({len(ledger.acked) - acked_before} new)"
            )
            await server.restart()
            async with client(server) as http:
                await verify(http, ledger, f"verify-{cycle}", context)
        assert ledger.acked, f"seed {seed}: no push was ever acknowledged"
    except BaseException:
        print(server.explain("the crash test failed"))
        raise
    finally:
        await server.stop()


async def _groups(http: httpx.AsyncClient, topic: str) -> set[str]:
    answer = await http.get(f"/topics/{topic}")
    assert answer.status_code == 200, answer.text
    return {g["name"] for g in answer.json()["consumer_groups"]}


async def _messages(http: httpx.AsyncClient, topic: str) -> int:
    answer = await http.get(f"/topics/{topic}")
    assert answer.status_code == 200, answer.text
    count: int = answer.json()["messages"]
    return count


async def test_sigterm_answers_held_long_polls(tmp_path: Path) -> None:
    """SIGTERM answers every held long-poll (timeout 30 s) with ``[]`` within two seconds, and
    the server then exits.
    """
    topic = "shutdown.test"
    groups = {f"held-{i}" for i in range(3)}
    # A short retention empties the topic, so fresh consumer groups have nothing to read and
    # their polls are held; each group shows in the topic's stats once its poll is inside.
    async with ServerProcess(
        tmp_path / "store.db",
        tmp_path / "server.log",
        args=["--retention-seconds", "0.3"],
        env={"POLICY_PUBSUB_MAINTENANCE_INTERVAL_SECONDS": "0.1"},
    ) as server:
        timeout = httpx.Timeout(10.0, read=60.0)
        async with httpx.AsyncClient(base_url=server.url, timeout=timeout, trust_env=False) as http:
            answer = await http.post(f"/events/{topic}", json={"hello": "world"})
            assert answer.status_code == 200, answer.text

            async def empty() -> bool:
                return await _messages(http, topic) == 0

            await wait_for(empty, timeout=10, every=0.05)
            polls = [
                asyncio.create_task(
                    http.get(f"/events/{topic}/{group}/c1", params={"timeout": 30000})
                )
                for group in sorted(groups)
            ]
            try:

                async def held() -> bool:
                    return groups <= await _groups(http, topic)

                await wait_for(held, timeout=10, every=0.02)
                assert not any(p.done() for p in polls), "a poll answered before SIGTERM"
                loop = asyncio.get_running_loop()
                signalled = loop.time()
                server.send(signal.SIGTERM)
                answers = await asyncio.wait_for(asyncio.gather(*polls), timeout=10)
                elapsed = loop.time() - signalled
            finally:
                for poll in polls:
                    poll.cancel()
                await asyncio.gather(*polls, return_exceptions=True)
        assert elapsed < 2.0, server.explain(f"held polls answered {elapsed:.2f} s after SIGTERM")
        got = [(a.status_code, a.text) for a in answers]
        assert got == [(200, "[]")] * len(groups), server.explain(f"answers {got}")
        code = await server.wait(10)
        assert code is not None, server.explain("the server did not exit within 10 s of SIGTERM")
        assert code in (0, -signal.SIGTERM), server.explain(f"exit status {code}")
        assert "Application shutdown complete" in server.tail(), server.explain("no clean stop")


async def test_sigterm_exits_with_status_0(tmp_path: Path) -> None:
    """A server stopped by SIGTERM exits with status 0 (a clean stop, not death by signal)."""
    async with ServerProcess(tmp_path / "store.db", tmp_path / "server.log") as server:
        code = await server.terminate()
        assert code == 0, server.explain(f"exit status {code} after SIGTERM")
