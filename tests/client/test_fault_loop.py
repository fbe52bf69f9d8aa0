"""kill -9 at random moments, in a bounded loop, of a replica, the message router or a
component, while PAP writers push new versions through both replicas and components apply
them through the SDK; checked against a model of what was acknowledged and of what each
component's append-only log says it applied, in order.

Two replicas share a fresh PostgreSQL database and a private NATS JetStream (its own
nats-server on a free port, never the shared one). Each component is a process of its own with
a state file (tests/client/component_process.py); a restarted component talks to the other
replica than before, so its consumer group moves between replicas.

The model, per component and per policy:

- no acknowledged change is lost: each component ends holding, of each policy, the newest
  acknowledged version or a newer one that was pushed (a push whose answer died with its
  replica may have committed);
- no version nobody pushed;
- never back: each change is computed against what the component held (its ``previous`` is
  the last thing it applied, or what the state file gave back at start-up), is above it in
  revision, and no policy's version goes down;
- each change at most once across the component's own kill -9: at start-up it holds what it
  last recorded as applied (the state file), so a change it acknowledged is not applied again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from tests.api.helpers import tosca
from tests.client.component_process import ComponentProcess
from tests.conftest import postgres_database, wait_for
from tests.nats_server import PrivateNats
from tests.processes import ServerProcess

pytestmark = pytest.mark.slow

# What is killed, in an order the seed shuffles: a replica's restart costs seconds, the rest
# a fraction of one.
# "outage" kills NATS, then kills and restarts a component before NATS is back: the
# restarted component's subscribe answer is newer than what the stream still holds for it,
# and its first polls race the relay that publishes its newer snapshots.
# "stall" freezes (SIGSTOP) the replica whose relay publishes, so the stream keeps older
# snapshots while the store moves on, and restarts a component on the other replica under a
# new consumer group, which starts at the oldest snapshot the stream keeps: older than the
# component's subscribe answer, every time.
KILLS = ["replica", "nats"] + ["outage"] * 3 + ["stall"] * 2 + ["component"] * 4
CYCLES = len(KILLS)
COMPONENTS = 3
POLICIES = ("fl.a", "fl.b")  # one PAP writer each, alternating between the replicas
SEED = int(os.environ.get("POLICY_PUBSUB_FAULT_SEED", "20261203"))
# How long PostgreSQL lets a frozen replica's transaction hold the other one's writes up.
IDLE_TRANSACTION_SECONDS = 1.0


class Writer:
    """Pushes ever newer versions of one policy, to replica A and B in turn (the next one
    when a push fails); remembers what was attempted and what was acknowledged.
    """

    def __init__(self, policy_id: str, replicas: list[ServerProcess], rng: random.Random):
        self.policy_id = policy_id
        self.replicas = replicas
        self.rng = rng
        self.attempted = 0
        self.acknowledged: list[int] = []
        self.running = True
        self.paused: set[str] = set()  # urls of replicas not to push to
        self.sending_to: str | None = None

    async def run(self, http: httpx.AsyncClient) -> None:
        turn = 0
        while self.running:
            replica = self.replicas[turn % len(self.replicas)]
            turn += 1
            if not replica.running or replica.url in self.paused:
                await asyncio.sleep(0.01)
                continue
            self.attempted += 1
            version = self.attempted
            body = {"policies": [tosca(self.policy_id, f"{version}.0.0")]}
            self.sending_to = replica.url
            try:
                answer = await http.post(f"{replica.url}/pap/v1/policies", json=body)
            except httpx.TransportError:
                answer = None  # not acknowledged; it may have committed
            finally:
                self.sending_to = None
            if answer is not None and answer.status_code == 200:
                self.acknowledged.append(version)
            await asyncio.sleep(self.rng.uniform(0.01, 0.05))


async def test_components_never_go_back_nor_lose_a_change_across_kills(
    tmp_path: Path, private_nats: PrivateNats
) -> None:
    rng = random.Random(SEED)  # what is killed and when; the writers have their own
    nats = private_nats
    async with postgres_database() as url, AsyncExitStack() as stack:
        args = ["--router", nats.url]
        env = {
            "POLICY_PUBSUB_POSITION_FLUSH_SECONDS": "0.05",
            "POLICY_PUBSUB_IDLE_TRANSACTION_TIMEOUT_SECONDS": str(IDLE_TRANSACTION_SECONDS),
        }
        replicas = [
            ServerProcess(url, tmp_path / f"replica-{name}.log", args=args, env=env)
            for name in "ab"
        ]
        for replica in replicas:
            await stack.enter_async_context(replica)
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=5, trust_env=False))
        writers = [
            Writer(policy_id, replicas, random.Random(f"{SEED}-{policy_id}"))
            for policy_id in POLICIES
        ]
        components = [ComponentProcess(tmp_path, f"c{i}") for i in range(COMPONENTS)]
        for index, component in enumerate(components):
            await component.start(replicas[index % 2].url)
        stack.push_async_callback(_kill_all, components)
        pushing = [asyncio.create_task(writer.run(http)) for writer in writers]
        try:
            # The faults begin once every component applied its first change.
            await wait_for(lambda: all(c.holds() for c in components), timeout=30, every=0.05)
            for target in rng.sample(KILLS, len(KILLS)):
                await asyncio.sleep(rng.uniform(0.1, 0.5))
                if target == "replica":
                    replica = rng.choice(replicas)
                    await replica.kill()
                    await asyncio.sleep(rng.uniform(0, 0.3))
                    await replica.restart()
                elif target == "nats":
                    await nats.kill()
                    await asyncio.sleep(rng.uniform(0, 0.5))
                    await nats.start()
                elif target == "outage":
                    await nats.kill()
                    await asyncio.sleep(rng.uniform(0.05, 0.3))
                    component = rng.choice(components)
                    await component.kill()
                    await component.start(replicas[component.starts % 2].url)
                    await asyncio.sleep(rng.uniform(0.2, 0.5))
                    await nats.start()
                elif target == "stall":
                    await _stall(http, replicas, writers, rng.choice(components))
                else:
                    component = rng.choice(components)
                    await component.kill()
                    await asyncio.sleep(rng.uniform(0, 0.2))
                    await component.start(replicas[component.starts % 2].url)
            for writer in writers:
                writer.running = False
            await asyncio.gather(*pushing)
            newest = {w.policy_id: max(w.acknowledged) for w in writers}

            def current() -> bool:
                return all(
                    all(c.holds().get(pid, 0) >= v for pid, v in newest.items()) for c in components
                )

            await wait_for(current, timeout=20, every=0.05)
        except BaseException:
            for replica in replicas:
                print(replica.explain(f"replica {replica.url}"))
            for component in components:
                print(f"--- {component.subscriber_id}:", component.output.read_text()[-3000:])
            raise
        finally:
            for writer in writers:
                writer.running = False
            await asyncio.gather(*pushing, return_exceptions=True)

        attempted = {w.policy_id: w.attempted for w in writers}
        for component in components:
            assert component.exited() is None, component.output.read_text()[-3000:]
            _check_log(component, attempted, newest)
        assert all(len(w.acknowledged) > CYCLES for w in writers), "too few pushes to judge"


async def _stall(
    http: httpx.AsyncClient,
    replicas: list[ServerProcess],
    writers: list[Writer],
    component: ComponentProcess,
) -> None:
    """Freeze the relay's replica; while it is frozen, kill the component and start it on
    the other replica under a new consumer group, and wait until that group has read what
    the stream holds for it (older than its subscribe answer: the relay is frozen).
    """
    leader = await _relay_leader(http, replicas)
    other = next(r for r in replicas if r is not leader)
    for writer in writers:
        writer.paused.add(leader.url)
    # Frozen between two statements of a transaction, it would hold the other replica's
    # writes up only until PostgreSQL ends its session (IDLE_TRANSACTION_SECONDS); frozen in
    # the middle of one (a push's COPY into the outbox), until it resumes: no push is left
    # half done inside it (README "A frozen replica").
    await wait_for(lambda: all(w.sending_to != leader.url for w in writers), timeout=10)
    leader.send(signal.SIGSTOP)
    try:
        await component.kill()
        before = sum(len(w.acknowledged) for w in writers)
        await wait_for(lambda: sum(len(w.acknowledged) for w in writers) >= before + 2)
        component.groups += 1
        await component.start(other.url)

        async def read_all() -> bool:
            answer = await http.get(f"{other.url}/topics/{component.topic}")
            if answer.status_code != 200:
                return False
            groups = {g["name"]: g["lag"] for g in answer.json()["consumer_groups"]}
            return bool(groups.get(component.group) == 0)

        await wait_for(read_all, timeout=10, every=0.05)
    finally:
        leader.send(signal.SIGCONT)
        for writer in writers:
            writer.paused.discard(leader.url)


async def _relay_leader(http: httpx.AsyncClient, replicas: list[ServerProcess]) -> ServerProcess:
    """The replica whose relay holds the leader lock (once one does)."""
    found: list[ServerProcess] = []

    async def leading() -> bool:
        for replica in replicas:
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                health = (await http.get(f"{replica.url}/healthcheck")).json()
                if health["details"]["outbox"]["relay_leader"]:
                    found.append(replica)
                    return True
        return False

    await wait_for(leading, timeout=10, every=0.05)
    return found[0]


async def _kill_all(components: list[ComponentProcess]) -> None:
    for component in components:
        with contextlib.suppress(ProcessLookupError):
            await component.kill()


def _check_log(
    component: ComponentProcess, attempted: dict[str, int], newest: dict[str, int]
) -> None:
    """Replay the component's log against the model (see the module docstring)."""
    name = component.subscriber_id
    entries = component.entries()
    held: dict[str, int] = {}
    held_revision = -1
    high: dict[str, int] = {}  # the newest version of each policy it ever applied
    recorded: dict[str, int] = {}  # what the state file holds: the last acked, or later
    recorded_then: list[dict[str, int]] = [{}]  # what it may hold if killed before "acked"
    starts = applies = 0
    for number, entry in enumerate(entries):
        where = f"{name} log entry {number}: {entry}"
        if "start" in entry:
            starts += 1
            # At most once: it starts from what it recorded, not from an older state.
            assert entry["start"] in [recorded, *recorded_then], f"{where}; recorded {recorded}"
            held = entry["start"]
            held_revision = entry["revision"]
            recorded, recorded_then = held, []
        elif "apply" in entry:
            applies += 1
            new = entry["apply"]
            assert entry["previous"] == held, f"{where}: computed against {held}"
            assert entry["revision"] > held_revision, f"{where}: not above {held_revision}"
            _never_back(high, new, where)
            high = {**high, **new}
            for pid, version in new.items():
                assert 1 <= version <= attempted[pid], f"{where}: {pid} {version} never pushed"
            held, held_revision = new, entry["revision"]
            recorded_then.append(new)  # the state file may be written before "acked"
        else:
            assert entry["acked"] == held_revision, where
            recorded, recorded_then = held, []
    # A kill may come before a start-up wrote its entry, never an entry without a start.
    assert 1 <= starts <= component.starts, f"{name}: {starts} entries, {component.starts} starts"
    assert applies > 0, f"{name} applied nothing"
    for pid, version in newest.items():
        assert held.get(pid, 0) >= version, f"{name} ends at {held}, acknowledged {newest}"


def _never_back(high: dict[str, int], new: dict[str, int], where: str) -> None:
    """No policy it ever applied is missing from ``new`` or older there (none is deleted)."""
    for pid, version in high.items():
        assert pid in new and new[pid] >= version, f"{where}: went back from {high}"
