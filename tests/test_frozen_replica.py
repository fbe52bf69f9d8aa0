"""A replica frozen (SIGSTOP: alive to TCP, silent to the database) on a shared PostgreSQL
store costs the others a bounded time: the database ends its sessions once idle too long (in
a transaction: its row locks; a leader lock's session: its leadership), and once it resumes it
serves again without leading alongside the replica that took over.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Set
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
from sqlalchemy.engine import make_url

from policy_pubsub.relay import LOCK_NAME
from policy_pubsub.store import dialects
from tests.api.helpers import tosca
from tests.conftest import postgres_database, wait_for
from tests.nats_server import PrivateNats
from tests.processes import ServerProcess

pytestmark = pytest.mark.slow

#: The session timeouts the replicas run with here: short, so that the tests are.
IDLE_TRANSACTION_SECONDS = 1.5
LEADER_LOCK_SECONDS = 1.0

#: The leader locks a replica on NATS takes: the relay's and the background jobs'.
LOCKS = {LOCK_NAME, "dead-letter retention", "change log pruning"}

#: The advisory locks held in the test's database: each lock's key and its holder's pid.
HELD_LOCKS = """
SELECT (l.classid::bigint << 32) | l.objid::bigint, l.pid
  FROM pg_locks l JOIN pg_database d ON d.oid = l.database
 WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()
"""


@asynccontextmanager
async def _admin(url: str) -> AsyncIterator[Any]:
    """A connection of the test's own to the replicas' database."""
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        yield conn
    finally:
        await conn.close()


@asynccontextmanager
async def _frozen(replica: ServerProcess) -> AsyncIterator[None]:
    """SIGSTOP the replica for the block; SIGCONT on the way out, whatever happens."""
    replica.send(signal.SIGSTOP)
    try:
        yield
    finally:
        replica.send(signal.SIGCONT)


def _tracebacks(replica: ServerProcess) -> int:
    return replica.log.read_text(errors="replace").count("Traceback")


async def test_a_replica_frozen_inside_a_transaction_holds_the_others_only_until_its_timeout(
    tmp_path: Path,
) -> None:
    """A replica frozen while its change holds the store's revision row (its transaction
    left open) makes another replica's push wait only until PostgreSQL ends the frozen
    session, after ``idle_transaction_timeout_seconds``; resumed, it answers again.
    """
    env = {"POLICY_PUBSUB_IDLE_TRANSACTION_TIMEOUT_SECONDS": str(IDLE_TRANSACTION_SECONDS)}
    loop = asyncio.get_running_loop()
    async with (
        postgres_database() as url,
        _admin(url) as admin,
        ServerProcess(url, tmp_path / "a.log", env=env) as a,
        ServerProcess(url, tmp_path / "b.log", env=env) as b,
        httpx.AsyncClient(timeout=20, trust_env=False) as http,
    ):
        r = await http.post(f"{b.url}/pap/v1/policies", json={"policies": [tosca("p1", "1.0.0")]})
        assert r.status_code == 200, r.text
        # The test locks p1's row, so that A's change of p1 stops inside its transaction,
        # after it took the store's revision row, at a moment the test knows.
        holding = admin.transaction()
        await holding.start()
        await admin.execute("SELECT 1 FROM policies WHERE policy_id = 'p1' FOR UPDATE")
        pushed = asyncio.create_task(
            http.post(f"{a.url}/pap/v1/policies", json={"policies": [tosca("p1", "2.0.0")]})
        )
        waiting: list[int] = []

        async def a_waits() -> bool:
            waiting[:] = await admin.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
            return len(waiting) == 1

        try:
            await wait_for(a_waits, timeout=10)
            [(frozen_pid,)] = waiting
            async with _frozen(a):
                await holding.commit()  # A's statement goes through; A never sends the next

                async def idle_in_transaction() -> bool:
                    state = await admin.fetchval(
                        "SELECT state FROM pg_stat_activity WHERE pid = $1", frozen_pid
                    )
                    return bool(state == "idle in transaction")

                await wait_for(idle_in_transaction, timeout=5)
                started = loop.time()
                answer = await http.post(
                    f"{b.url}/pap/v1/policies", json={"policies": [tosca("p2", "1.0.0")]}
                )
                took = loop.time() - started
                assert answer.status_code == 200, answer.text
                # It waited for A's session to be ended, and only that long.
                assert IDLE_TRANSACTION_SECONDS / 2 < took < IDLE_TRANSACTION_SECONDS + 5, took
                gone = await admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", frozen_pid
                )
                assert gone == 0
        finally:
            with contextlib.suppress(asyncpg.InterfaceError):
                await holding.rollback()  # when the test failed before its commit
            with contextlib.suppress(httpx.HTTPError):
                await asyncio.wait_for(pushed, timeout=15)  # answered once A resumed

        # A's change was rolled back with its session, and not acknowledged.
        assert pushed.done() and pushed.result().status_code == 503, a.explain("p1 v2")
        # Resumed, A gets a fresh connection from its pool and goes on serving.
        answer = await http.post(
            f"{a.url}/pap/v1/policies", json={"policies": [tosca("p3", "1.0.0")]}
        )
        assert answer.status_code == 200, a.explain(answer.text)
        decision = await http.post(f"{a.url}/decision/v1", json={"resource": {"policy-id": "p*"}})
        policies = decision.json()["policies"]
        assert sorted(policies) == ["p1", "p2", "p3"]
        assert policies["p1"]["version"] == "1.0.0"
        assert _tracebacks(a) == 0, a.explain("a traceback in the log")


async def test_a_frozen_leader_is_replaced_and_stands_down_when_it_resumes(
    tmp_path: Path, private_nats: PrivateNats
) -> None:
    """Frozen while it holds the relay's and the background jobs' leader locks, a replica
    loses them after ``leader_lock_timeout_seconds``: the other replica takes them and relays
    the pushes it acknowledged meanwhile to a subscriber; resumed, the frozen one finds its
    locks gone, says so once per lock, and no longer leads.
    """
    env = {
        "POLICY_PUBSUB_LEADER_LOCK_TIMEOUT_SECONDS": str(LEADER_LOCK_SECONDS),
        # Frozen inside one of its background transactions, A holds B up only this long.
        "POLICY_PUBSUB_IDLE_TRANSACTION_TIMEOUT_SECONDS": str(IDLE_TRANSACTION_SECONDS),
        "POLICY_PUBSUB_MAINTENANCE_INTERVAL_SECONDS": "0.5",
    }
    keys = {dialects.lock_key(name) for name in LOCKS}
    args = ["--router", private_nats.url]
    async with (
        postgres_database() as url,
        _admin(url) as admin,
        httpx.AsyncClient(timeout=10, trust_env=False) as http,
    ):

        async def holders() -> dict[int, int]:
            return {key: pid for key, pid in await admin.fetch(HELD_LOCKS) if key in keys}

        async def leads(replica: ServerProcess) -> bool:
            health = (await http.get(f"{replica.url}/healthcheck")).json()
            return bool(health["details"]["outbox"]["relay_leader"])

        async with ServerProcess(url, tmp_path / "a.log", args=args, env=env) as a:
            # A, alone, takes every lock; B starts once it has.
            await wait_for(lambda: _all_held(holders, keys), timeout=10)
            a_pids = set((await holders()).values())
            async with ServerProcess(url, tmp_path / "b.log", args=args, env=env) as b:
                r = await http.post(
                    f"{b.url}/decision/v1/subscription/s1",
                    json={"subscriber_topic": "t1", "policy-filters": [{"policy-id": "p*"}]},
                )
                assert r.status_code == 201, r.text
                first = await http.get(f"{b.url}/events/t1/g/c", params={"timeout": 5000})
                assert [json.loads(m)["event"] for m in first.json()] == ["subscribe"]
                assert await leads(a) and not await leads(b)

                async with _frozen(a):
                    r = await http.post(
                        f"{b.url}/pap/v1/policies", json={"policies": [tosca("p1", "1.0.0")]}
                    )
                    assert r.status_code == 200, r.text
                    # The relay moves to B: the acknowledged change reaches the subscriber.
                    answer = await http.get(
                        f"{b.url}/events/t1/g/c", params={"timeout": 8000}, timeout=15
                    )
                    [snapshot] = [json.loads(m) for m in answer.json()]
                    assert list(snapshot["policies"]) == ["p1"], b.explain(str(snapshot))
                    # And so do the background jobs' locks.
                    await wait_for(lambda: _all_held(holders, keys, not_by=a_pids), timeout=10)
                    b_pids = set((await holders()).values())

                # Resumed, A finds its locks gone and leads nothing, now and a while after.
                await wait_for(lambda: _not_leading(leads, a), timeout=5)
                for _ in range(5):
                    assert await leads(b) and not await leads(a)
                    assert set((await holders()).values()) == b_pids
                    await asyncio.sleep(0.2)
                log = a.log.read_text(errors="replace")
                for name in LOCKS:
                    assert log.count(f"lost the {name} lock") == 1, a.explain(name)
                assert _tracebacks(a) == 0, a.explain("a traceback in the log")

                # A serves again: its push reaches the subscriber through B's relay.
                r = await http.post(
                    f"{a.url}/pap/v1/policies", json={"policies": [tosca("p2", "1.0.0")]}
                )
                assert r.status_code == 200, a.explain(r.text)
                answer = await http.get(f"{b.url}/events/t1/g/c", params={"timeout": 5000})
                [snapshot] = [json.loads(m) for m in answer.json()]
                assert sorted(snapshot["policies"]) == ["p1", "p2"]


async def _all_held(
    holders: Callable[[], Awaitable[dict[int, int]]],
    keys: set[int],
    not_by: Set[int] = frozenset(),
) -> bool:
    """Every lock in ``keys`` is held, by no backend in ``not_by``."""
    held = await holders()
    return set(held) == keys and not set(held.values()) & not_by


async def _not_leading(
    leads: Callable[[ServerProcess], Awaitable[bool]], replica: ServerProcess
) -> bool:
    with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
        return not await leads(replica)
    return False
