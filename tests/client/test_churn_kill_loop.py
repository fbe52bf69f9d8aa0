"""kill -9 of the server at random moments, in a bounded loop, while subscriptions churn and
the maintenance of the embedded router runs every 0.2 s; checked against a model.

One server on SQLite keeps messages for 1 s, so every maintenance pass expires, compacts and
drops the rows of gone subscriptions (with the WAL checkpoints and tail trimming that go
with them). A PAP pushes new versions of a few policies of three types; SDK components with
filters on those types apply them; quiet subscribers (nobody reads their topics) add rows
for maintenance to drop. A churner re-deploys components: it stops one, then either deletes
its subscription and starts a new component (a new one on another topic, or the same one
installed again on its topic), or starts it again on another topic (its subscribe moves the
subscription). Half the deletes are followed by a poll of the old component's that arrives
late, as one sent just before it stopped would. Quiet subscribers are deleted and replaced
by new ones. So topics are emptied and forgotten while pushes flow, and some are taken again
later. Each kill comes at a moment the seed picks: any time, just after an unsubscribe
committed, or as a maintenance pass starts (one interval after the previous pass logged what
it dropped; in measured runs about half of the kills landed inside a pass).

The model, per component: the version it holds of each policy never goes back (no policy is
undeployed, so none leaves either); it holds nothing nobody pushed, nor anything outside its
filter; a live component ends holding at least the newest acknowledged version of every
policy its filter matches. Per subscription: one acknowledged (200/201) and not deleted since
still exists after every kill, on its topic; one whose DELETE was acknowledged (204) stays
gone. And once a maintenance pass has run after the last change, the store holds no message
of a subscriber that is gone from the topic, no consumer group of a topic nobody subscribes
to, no row of a topic nobody subscribes to, no mark of a gone subscription, no unused
snapshot body; and the server knows no emptied topic (404).

``POLICY_PUBSUB_CHURN_SEED`` replays a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import signal
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from policy_pubsub.client import PolicySubscriber, policy_version
from tests.client.conftest import subscriber
from tests.conftest import postgres_database, wait_for
from tests.processes import ServerProcess

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("POLICY_PUBSUB_CHURN_SEED", "20261203"))
MAINTENANCE_INTERVAL = 0.2
ENV = {
    "POLICY_PUBSUB_RETENTION_SECONDS": "1",
    "POLICY_PUBSUB_MAINTENANCE_INTERVAL_SECONDS": str(MAINTENANCE_INTERVAL),
    "POLICY_PUBSUB_POSITION_FLUSH_SECONDS": "0.05",
}
# When each kill comes, in an order the seed shuffles.
MOMENTS = ["any", "unsubscribe", "unsubscribe", "maintenance", "maintenance"]
CYCLES = len(MOMENTS)
MAINTENANCE_LOGGED = " expired and "  # in the line a maintenance pass logs
A, B, C = (f"onap.policies.churn.{name}" for name in "ABC")
POLICIES = {"churn.a1": A, "churn.a2": A, "churn.b1": B, "churn.b2": B, "churn.c1": C}
FILTER_TYPES = [(A,), (B, C), (A, C)]  # one component of each at any time
QUIET = 12  # subscribers nobody reads
SUBSCRIPTIONS = "/decision/v1/subscription"


def _policy(policy_id: str, version: int) -> dict[str, Any]:
    return {
        "type": POLICIES[policy_id],
        "type_version": "1.0.0",
        "name": policy_id,
        "version": f"{version}.0.0",
        "metadata": {"policy-id": policy_id, "policy-version": f"{version}.0.0"},
        "properties": {"version": version},
    }


def _versions(policies: Any) -> dict[str, int]:
    return {pid: int((policy_version(p) or "0").split(".")[0]) for pid, p in policies.items()}


@dataclass
class Component:
    """An SDK component on its own subscription; records every snapshot it applies."""

    subscriber_id: str
    topic: str
    types: tuple[str, ...]
    applied: list[dict[str, int]] = field(default_factory=list)
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    sub: PolicySubscriber | None = None

    def start(self, url: str) -> None:
        self.task = asyncio.create_task(self._run(url), name=self.subscriber_id)

    async def _run(self, url: str) -> None:
        self.sub = subscriber(
            url,
            subscriber_id=self.subscriber_id,
            subscriber_topic=self.topic,
            policy_filters=[{"policy-type": list(self.types)}],
            onap_instance=self.subscriber_id,
        )
        async with self.sub as sub:
            # Without a state file it starts holding the subscribe answer.
            self.applied.append(_versions(sub.policies))
            self.subscribed.set()
            async for change in sub.changes():
                self.applied.append(_versions(change.policies))

    async def stop(self) -> None:
        """Stop it, as a component's uninstall does before its subscription is deleted."""
        if self.sub is not None:
            self.sub.stop()
        if self.task is not None:
            await asyncio.wait_for(self.task, 10)

    def holds(self) -> dict[str, int]:
        return self.applied[-1] if self.applied else {}


@dataclass
class Model:
    attempted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(POLICIES, 0))
    acknowledged: dict[str, list[int]] = field(default_factory=lambda: {p: [] for p in POLICIES})
    live: dict[str, str] = field(default_factory=dict)  # acknowledged, not deleted: id -> topic
    deleted: set[str] = field(default_factory=set)  # DELETE acknowledged
    emptied: set[str] = field(default_factory=set)  # topics no subscription uses any more
    unsubscribes: int = 0
    unsubscribed: asyncio.Event = field(default_factory=asyncio.Event)

    def pushes(self) -> int:
        """How many policy versions were acknowledged."""
        return sum(map(len, self.acknowledged.values()))


class Churn:
    """The PAP pusher and the churner, with what they were told."""

    def __init__(self, http: httpx.AsyncClient, url: str, model: Model) -> None:
        self.http = http
        self.url = url
        self.model = model
        self.running = True
        self.components: list[Component] = []
        self.retired: list[Component] = []
        self.quiet: list[str] = []  # the quiet subscribers' ids
        self.names = itertools.count()
        self.late_polls = 0

    async def push(self, rng: random.Random) -> None:
        model = self.model
        while self.running:
            chosen = rng.sample(sorted(POLICIES), 2 if rng.random() < 0.2 else 1)
            versions = {}
            for pid in chosen:
                model.attempted[pid] += 1
                versions[pid] = model.attempted[pid]
            body = {"policies": [_policy(pid, v) for pid, v in versions.items()]}
            try:
                answer = await self.http.post("/pap/v1/policies", json=body)
            except httpx.TransportError:
                answer = None  # not acknowledged; it may have committed
            if answer is not None and answer.status_code == 200:
                for pid, version in versions.items():
                    model.acknowledged[pid].append(version)
            await asyncio.sleep(0.02 if answer is None else rng.uniform(0.005, 0.03))

    async def churn(self, rng: random.Random) -> None:
        while self.running:
            await asyncio.sleep(rng.uniform(0.05, 0.25))
            what = rng.random()
            if what < 0.55:
                index = rng.randrange(len(self.components))
                old = self.components[index]
                await old.stop()
                self.retired.append(old)
                if what < 0.15:
                    # Deployed again with a new topic: its subscribe moves the subscription.
                    subscriber_id, topic = old.subscriber_id, self.new_topic(rng)
                else:
                    await self.unsubscribe(old.subscriber_id)
                    if rng.random() < 0.5:
                        await self.late_poll(old)
                    if what < 0.25:  # installed again as it was: same id, same topic
                        subscriber_id, topic = old.subscriber_id, old.topic
                        self.model.emptied.discard(topic)
                    else:
                        subscriber_id, topic = self.new_id("comp"), self.new_topic(rng)
                new = Component(subscriber_id, topic, old.types)
                self.components[index] = new
                await self.deploy(new)
            else:
                index = rng.randrange(len(self.quiet))
                await self.unsubscribe(self.quiet[index])
                self.quiet[index] = await self.subscribe_quiet(rng)

    async def late_poll(self, component: Component) -> None:
        """A poll of the component's that reaches the server after its unsubscribe (sent
        before it was stopped, or by a copy of it still running).
        """
        path = f"/events/{component.topic}/{component.subscriber_id}/{component.subscriber_id}"
        with contextlib.suppress(httpx.TransportError):
            await self.http.get(path, params={"timeout": 0})
            self.late_polls += 1

    def new_id(self, kind: str) -> str:
        return f"churn-{kind}-{next(self.names)}"

    def new_topic(self, rng: random.Random) -> str:
        """Mostly a new topic; now and then one a subscription left empty earlier."""
        emptied = sorted(self.model.emptied)
        if emptied and rng.random() < 0.25:
            topic = rng.choice(emptied)
            self.model.emptied.discard(topic)
            return topic
        return f"churn.topic.{next(self.names)}"

    async def deploy(self, component: Component) -> None:
        component.start(self.url)
        # The SDK retries the subscribe until it is acknowledged.
        await wait_for(lambda: component.subscribed.is_set() or _ended(component.task), timeout=30)
        model = self.model
        left = model.live.get(component.subscriber_id)
        model.live[component.subscriber_id] = component.topic
        model.deleted.discard(component.subscriber_id)
        if left is not None and left not in model.live.values():
            model.emptied.add(left)  # it moved from there

    async def subscribe_quiet(self, rng: random.Random) -> str:
        subscriber_id, topic = self.new_id("quiet"), self.new_topic(rng)
        body = {"subscriber_topic": topic, "policy-filters": [{"policy-type": [A, B, C]}]}
        first = True
        while True:
            try:
                answer = await self.http.post(f"{SUBSCRIPTIONS}/{subscriber_id}", json=body)
            except httpx.TransportError:
                first = False
                await asyncio.sleep(0.02)
                continue
            if answer.status_code in (200, 201):
                # 200: an earlier attempt committed, its answer lost with the server.
                assert answer.status_code == 201 or not first, answer.text
                self.model.live[subscriber_id] = topic
                return subscriber_id
            if answer.status_code < 500:
                pytest.fail(f"subscribing {subscriber_id}: {answer.status_code} {answer.text}")
            first = False
            await asyncio.sleep(0.02)

    async def unsubscribe(self, subscriber_id: str) -> None:
        model = self.model
        first = True
        while True:
            try:
                answer = await self.http.delete(f"{SUBSCRIPTIONS}/{subscriber_id}")
            except httpx.TransportError:
                first = False
                await asyncio.sleep(0.02)
                continue
            if answer.status_code == 204 or (answer.status_code == 404 and not first):
                break  # a 404 after a lost answer: that attempt committed
            if answer.status_code == 404:
                pytest.fail(f"the acknowledged subscription {subscriber_id} was lost")
            if answer.status_code < 500:
                pytest.fail(f"unsubscribing {subscriber_id}: {answer.status_code} {answer.text}")
            first = False
            await asyncio.sleep(0.02)
        topic = model.live.pop(subscriber_id)
        model.deleted.add(subscriber_id)
        if topic not in model.live.values():
            model.emptied.add(topic)
        model.unsubscribes += 1
        model.unsubscribed.set()


def _ended(*tasks: asyncio.Task[None] | None) -> bool:
    """Whether one of the tasks ended; raises what it raised, if anything (a wait on the
    pusher, the churner or a component fails at once with their error, not at its deadline).
    """
    done = [task for task in tasks if task is not None and task.done()]
    for task in done:
        task.result()
    return bool(done)


async def _kill_at(
    moment: str, server: ServerProcess, model: Model, rng: random.Random, work: list[Any]
) -> None:
    """Wait for the moment, then kill -9 the server."""
    if moment == "unsubscribe":
        model.unsubscribed.clear()
        await wait_for(lambda: model.unsubscribed.is_set() or _ended(*work), timeout=10)
        await asyncio.sleep(rng.uniform(0, 0.02))
    elif moment == "maintenance":
        # The next pass starts one interval after the last one logged what it dropped.
        before = _maintenance_passes(server)
        await wait_for(lambda: _maintenance_passes(server) > before, timeout=10)
        await asyncio.sleep(MAINTENANCE_INTERVAL + rng.uniform(-0.005, 0.02))
    else:
        await asyncio.sleep(rng.uniform(0.1, 0.6))
    await server.kill(signal.SIGKILL)


def _maintenance_passes(server: ServerProcess) -> int:
    text = server.log.read_text(errors="replace")
    return sum(MAINTENANCE_LOGGED in line for line in text.splitlines())


async def _orphans(database: Path | str) -> dict[str, int]:
    """Rows the store keeps for subscribers or topics that are gone (none once maintenance
    ran): snapshots of a subscriber no longer on their topic, messages of a topic nobody
    subscribes to, consumer groups and rows of such a topic, snapshot bodies no message uses.
    """
    queries = {
        "snapshots of gone subscribers": (
            "SELECT count(*) FROM messages m WHERE m.key IS NOT NULL AND NOT EXISTS"
            " (SELECT 1 FROM subscriptions s WHERE s.subscriber_id = m.key AND s.topic = m.topic)"
        ),
        "messages of emptied topics": (
            "SELECT count(*) FROM messages m WHERE NOT EXISTS"
            " (SELECT 1 FROM subscriptions s WHERE s.topic = m.topic)"
        ),
        "groups of emptied topics": (
            "SELECT count(*) FROM consumer_groups g WHERE NOT EXISTS"
            " (SELECT 1 FROM subscriptions s WHERE s.topic = g.topic)"
        ),
        "rows of emptied topics": (
            "SELECT count(*) FROM topics t WHERE NOT EXISTS"
            " (SELECT 1 FROM subscriptions s WHERE s.topic = t.name)"
        ),
        "marks of gone subscriptions": (
            "SELECT count(*) FROM subscription_marks k WHERE NOT EXISTS"
            " (SELECT 1 FROM subscriptions s WHERE s.subscriber_id = k.subscriber_id)"
        ),
        "unused bodies": (
            "SELECT count(*) FROM snapshot_bodies b WHERE NOT EXISTS"
            " (SELECT 1 FROM messages m WHERE m.revision = b.revision AND m.part = b.part)"
        ),
    }
    if isinstance(database, Path):
        with contextlib.closing(sqlite3.connect(database, timeout=10)) as conn:
            return {name: conn.execute(sql).fetchone()[0] for name, sql in queries.items()}
    import asyncpg  # type: ignore[import-untyped]

    dsn = make_url(database).set(drivername="postgresql").render_as_string(False)
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return {name: int(await conn.fetchval(sql)) for name, sql in queries.items()}
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def _store(kind: str, tmp_path: Path) -> AsyncIterator[Path | str]:
    """A SQLite file, or a new PostgreSQL database (its URL)."""
    if kind == "sqlite":
        yield tmp_path / "store.db"
        return
    async with postgres_database() as url:
        yield url


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_churned_subscriptions_and_maintenance_survive_server_kills(
    kind: str, tmp_path: Path
) -> None:
    """Components stay current and never go back, acknowledged subscribes and unsubscribes
    stand, and emptied topics leave nothing behind, across kill -9s aimed at maintenance and
    at unsubscribes; on SQLite and on PostgreSQL (where dropping topic rows takes the offset
    floor's locks).
    """
    rng = random.Random(SEED)  # when and where the kills come; the churn has its own
    model = Model()
    orphans: dict[str, Any] = {}
    async with (
        _store(kind, tmp_path) as database,
        ServerProcess(database, tmp_path / "server.log", env=ENV) as server,
        httpx.AsyncClient(base_url=server.url, timeout=5, trust_env=False) as http,
    ):
        churn = Churn(http, server.url, model)
        for types in FILTER_TYPES:
            component = Component(churn.new_id("comp"), churn.new_topic(rng), types)
            churn.components.append(component)
            await churn.deploy(component)
        for _ in range(QUIET):
            churn.quiet.append(await churn.subscribe_quiet(rng))
        work = [
            asyncio.create_task(churn.push(random.Random(f"{SEED}-push"))),
            asyncio.create_task(churn.churn(random.Random(f"{SEED}-churn"))),
        ]
        try:
            await wait_for(lambda: _maintenance_passes(server) > 0, timeout=10)
            for moment in rng.sample(MOMENTS, len(MOMENTS)):
                await _kill_at(moment, server, model, rng, work)
                await asyncio.sleep(rng.uniform(0, 0.2))
                await server.restart()

                # Pushes and the churn go on before the next kill.
                def went_on(acked: int = model.pushes(), churned: int = model.unsubscribes) -> bool:
                    return _ended(*work) or (
                        model.pushes() > acked and model.unsubscribes > churned
                    )

                await wait_for(went_on, timeout=15)
            # The churn goes on after the last restart: topics the running process empties
            # must be forgotten by it (a restart forgets every topic).
            retired, late = len(churn.retired), churn.late_polls
            await wait_for(
                lambda: (
                    _ended(*work) or (len(churn.retired) >= retired + 3 and churn.late_polls > late)
                ),
                timeout=15,
            )
            churn.running = False
            await asyncio.wait_for(asyncio.gather(*work), 30)
            newest = {pid: max(versions) for pid, versions in model.acknowledged.items()}

            def current() -> bool:
                return all(
                    c.holds().get(pid, 0) >= version
                    for c in churn.components
                    for pid, version in newest.items()
                    if POLICIES[pid] in c.types
                )

            await wait_for(current, timeout=15, every=0.05)
            for component in churn.components:
                assert component.task is not None and not component.task.done(), component

            # A maintenance pass after the last change drops what the churn left, in the
            # store and in the server's memory.
            async def clean() -> bool:
                orphans.update(await _orphans(database))
                for topic in sorted(model.emptied):
                    # Its messages and groups went with its last subscription, and its row
                    # at the next maintenance pass: the topic is unknown.
                    answer = await http.get(f"/topics/{topic}")
                    if answer.status_code == 404:
                        orphans.pop(f"emptied topic {topic}", None)
                    else:
                        assert answer.status_code == 200, answer.text
                        orphans[f"emptied topic {topic}"] = answer.json()
                return not any(orphans.values())

            await wait_for(clean, timeout=10, every=0.1)
            for subscriber_id, topic in model.live.items():
                answer = await http.get(f"{SUBSCRIPTIONS}/{subscriber_id}")
                assert answer.status_code == 200, f"{subscriber_id} is lost: {answer.text}"
                assert answer.json()["subscriber_topic"] == topic
            for subscriber_id in sorted(model.deleted):
                answer = await http.get(f"{SUBSCRIPTIONS}/{subscriber_id}")
                assert answer.status_code == 404, f"{subscriber_id} came back: {answer.text}"
        except BaseException:
            print(f"seed {SEED}; acknowledged {model.acknowledged}; orphans {orphans}")
            print(server.explain("server log"))
            raise
        finally:
            churn.running = False
            for component in [*churn.components, *churn.retired]:
                if component.sub is not None:
                    component.sub.stop()
            tasks = [c.task for c in [*churn.components, *churn.retired] if c.task is not None]
            await asyncio.gather(*work, *tasks, return_exceptions=True)

    for component in [*churn.components, *churn.retired]:
        _check(component, model)
    assert len(churn.retired) >= CYCLES, "too few components re-deployed to judge"
    assert all(len(v) > CYCLES for v in model.acknowledged.values()), "too few pushes to judge"


def _check(component: Component, model: Model) -> None:
    """Replay what the component applied against the model (see the module docstring)."""
    name = component.subscriber_id
    assert component.task is not None and component.task.done()
    assert component.task.exception() is None, f"{name} failed: {component.task.exception()!r}"
    assert component.applied, f"{name} applied nothing"
    held: dict[str, int] = {}
    for number, snapshot in enumerate(component.applied):
        where = f"{name} snapshot {number}: {snapshot}"
        for pid, version in held.items():
            assert snapshot.get(pid, 0) >= version, f"{where}: went back from {held}"
        for pid, version in snapshot.items():
            assert pid in POLICIES and POLICIES[pid] in component.types, f"{where}: not its"
            assert 1 <= version <= model.attempted[pid], f"{where}: {pid} {version} never pushed"
        held = snapshot
