"""Fan-out at scale, in process: the service core over a Store with the embedded router.

    .venv/bin/python bench/fanout.py [--db sqlite postgres] [--subs 100000] [--sets 10000] \
        [--rounds 3]

The store is seeded by bulk insert with ``--subs`` subscriptions in ``--sets`` distinct filter
sets (``{"policy-id": ["bench.p<j>"], "policy-type": ["bench.type.<j % 10>"]}``), each on its
own topic, plus one subscription alone on ``bench.single``, and ten base policies. Then:

- push affecting 10% (``bench.type.0``: with the defaults 1,000 filter sets, 10,000
  subscribers): the whole ``deploy`` call (until every snapshot is committed), the part spent
  matching and building the snapshots, the part spent in the SQL statements and the commit,
  snapshots per second, and the CPU time of this process (its threads included: SQLite's work;
  not PostgreSQL's), steadier than wall time on a loaded machine; then (unless
  ``--no-breakdown``) the same push again, committed through the steps of ``GroupCommit`` one by
  one and timed: ``revision`` (take the next one), ``plan`` (diff, and ``matching``: matching
  and building the snapshots), ``write`` (the store's statements, of which ``put_policies``,
  ``append`` and ``mark_published`` are timed apart), ``commit``, and ``apply`` (the in-memory
  state takes the change in; the outlet wakes the router's readers);
- push affecting one subscriber (``bench.single``), with ``--subs`` subscriptions and with 10.

PostgreSQL runs in a scratch database (created, then dropped). ``FANOUT_CODE=<checkout>``
runs the same benchmark over another checkout's ``policy_pubsub`` (e.g. ``main``, for a
comparison in the same run of the machine).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    ROOT,
    header,
    median,
    pct,
    pg_database,
    pg_drop,
    policy,
    save,
    seed,
    table,
)

sys.path.insert(0, os.environ.get("FANOUT_CODE") or str(ROOT))

from policy_pubsub.metrics import Metrics
from policy_pubsub.models import ToscaPolicy
from policy_pubsub.routers import OutMessage
from policy_pubsub.routers.embedded import EmbeddedRouter
from policy_pubsub.service import (
    ChangeResult,
    GroupCommit,
    InStoreOutlet,
    Policy,
    PolicyChange,
    State,
)
from policy_pubsub.store import PolicyRow, Store, WriteTx, now_ms

# The store calls timed apart within the write step.
STATEMENTS = ("put_policies", "append", "mark_published")
# The commit's steps, in order (GroupCommit.commit runs them the same way).
STEPS = ("revision", "plan", "write", "commit", "apply")


def _subscriptions(n: int, sets: int) -> list[tuple[str, str, list[dict[str, Any]]]]:
    subs = [
        (
            f"s-{i}",
            f"t-{i}",
            [{"policy-id": [f"bench.p{i % sets}"], "policy-type": [f"bench.type.{i % sets % 10}"]}],
        )
        for i in range(n)
    ]
    subs.append(("single", "t-single", [{"policy-id": ["bench.single"]}]))
    return subs


class TimedTx(WriteTx):
    """The transaction of a commit, timing the store calls of its write step."""

    def __init__(self, tx: WriteTx, seconds: dict[str, float]) -> None:
        super().__init__(tx.conn, tx.dialect)
        self.seconds = seconds

    @contextlib.contextmanager
    def _timing(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    async def put_policies(self, rows: Sequence[PolicyRow]) -> None:
        with self._timing("put_policies"):
            await super().put_policies(rows)

    async def append(self, batch: Sequence[OutMessage], at: int) -> dict[str, int]:
        with self._timing("append"):
            return await super().append(batch, at)

    async def mark_published(self, subscriber_ids: Iterable[str], revision: int, at: int) -> None:
        with self._timing("mark_published"):
            await super().mark_published(subscriber_ids, revision, at)


class Core:
    """The service core over the store and the embedded router, driven without HTTP."""

    def __init__(self, store: Store, router: EmbeddedRouter) -> None:
        self.store = store
        self.metrics = Metrics()
        self.state = State(store)
        self.commits = GroupCommit(self.state, store, router, InStoreOutlet(router), self.metrics)

    async def deploy(self, push: dict[str, Any]) -> ChangeResult:
        """The push as the PAP webhook commits it."""
        return await self.commits.submit(_change(push))

    def matching_seconds(self) -> float:
        """Matching and snapshot building so far (the service's own histogram)."""
        found = self.metrics.registry.get_sample_value("policy_pubsub_matching_seconds_sum")
        return float(found or 0.0)

    async def deploy_by_steps(self, push: dict[str, Any]) -> dict[str, float]:
        """The push committed step by step, as GroupCommit.commit does it, timing each step
        and the store calls of the write step.
        """
        seconds: dict[str, float] = {}
        change = _change(push)
        laps = [time.perf_counter()]

        def lap(name: str) -> None:
            laps.append(time.perf_counter())
            seconds[name] = laps[-1] - laps[-2]

        async with self.state.writing:
            async with self.store.write() as tx:
                first = await self.state.take_revision(tx)
                lap("revision")
                matching = self.matching_seconds()
                plan = await self.commits.plan([change], first, now_ms())
                seconds["matching"] = self.matching_seconds() - matching
                lap("plan")
                written = await self.commits.write(TimedTx(tx, seconds), plan)
                lap("write")
            lap("commit")
            await self.commits.apply(plan, written)
            lap("apply")
        seconds["total"] = laps[-1] - laps[0]
        return seconds


def _change(push: dict[str, Any]) -> PolicyChange:
    return PolicyChange(wanted=[Policy.from_model(ToscaPolicy.model_validate(push))])


async def _steps(core: Core, n: int, rounds: int) -> dict[str, Any]:
    """The push affecting many again, step by step (medians over the rounds)."""
    samples: dict[str, list[float]] = {}
    for r in range(rounds):
        found = await core.deploy_by_steps(policy("bench.push", "bench.type.0", 1000 + r))
        for name in ("total", "matching", *STEPS, *STATEMENTS):
            samples.setdefault(name, []).append(found.get(name, 0.0))
    return {
        "case": "push affecting many: steps",
        "subs": n + 1,
        **{f"{name}_ms": median(values) * 1000 for name, values in samples.items()},
    }


async def _one(url: str, n: int, sets: int, rounds: int, breakdown: bool) -> list[dict[str, Any]]:
    base = [policy(f"bench.base{k}", f"bench.type.{k}", k) for k in range(10)]
    started = time.perf_counter()
    await seed(url, _subscriptions(n, sets), base)
    seeded = time.perf_counter() - started
    store = Store(url)
    await store.open()
    router = EmbeddedRouter(
        store, retention_seconds=3600, maintenance_interval_seconds=3600, position_flush_seconds=0.2
    )
    core = Core(store, router)
    rows = []
    try:
        await router.start()
        started = time.perf_counter()
        await core.state.load()
        loaded = time.perf_counter() - started
        totals, cpus, matchings, notified = [], [], [], 0
        for r in range(rounds):
            push = policy("bench.push", "bench.type.0", r)
            matched = core.matching_seconds()
            await asyncio.sleep(0.3)  # a background WAL checkpoint of the last push ends
            started, cpu = time.perf_counter(), time.process_time()
            result = await core.deploy(push)
            totals.append(time.perf_counter() - started)
            cpus.append(time.process_time() - cpu)
            matchings.append(core.matching_seconds() - matched)
            notified = result.notified
        total, matching = median(totals), median(matchings)
        rows.append(
            {
                "case": "push affecting many",
                "subs": n + 1,
                "notified": notified,
                "total_ms": total * 1000,
                "matching_ms": matching * 1000,
                "sql_commit_ms": (total - matching) * 1000,
                "snapshots_per_s": notified / total,
                "cpu_ms": median(cpus) * 1000,
                "seed_s": seeded,
                "load_s": loaded,
            }
        )
        if breakdown:
            rows.append(await _steps(core, n, rounds))
        singles = []
        for r in range(max(20, rounds)):
            started = time.perf_counter()
            result = await core.deploy(policy("bench.single", "bench.other", r))
            singles.append(time.perf_counter() - started)
        rows.append(
            {
                "case": "push affecting one",
                "subs": n + 1,
                "notified": result.notified,
                "total_ms": median(singles) * 1000,
                "p99_ms": pct(singles, 0.99) * 1000,
            }
        )
    finally:
        await router.close()
        await store.close()
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--db", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"]
    )
    parser.add_argument("--subs", type=int, default=100_000)
    parser.add_argument("--sets", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--no-breakdown",
        dest="breakdown",
        action="store_false",
        help="skip the step-by-step timing of the push affecting many",
    )
    args = parser.parse_args()
    head = header()
    import policy_pubsub

    print("code:", Path(policy_pubsub.__file__).parent)
    rows = []
    for db in args.db:
        for n, sets in ((args.subs, args.sets), (10, 10)):
            with tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp:
                if db == "sqlite":
                    url = f"sqlite+aiosqlite:///{Path(tmp) / 'fanout.db'}"
                else:
                    url = pg_database("pp_bench_fanout")
                try:
                    found = await _one(url, n, sets, args.rounds, args.breakdown)
                finally:
                    if db == "postgres":
                        pg_drop("pp_bench_fanout")
            for row in found:
                if n == 10 and row["case"] != "push affecting one":
                    continue
                rows.append({"db": db, **row})
                print(rows[-1], flush=True)
    table(
        rows,
        [
            "db",
            "case",
            "subs",
            "notified",
            "total_ms",
            "matching_ms",
            "sql_commit_ms",
            "snapshots_per_s",
            "cpu_ms",
            "p99_ms",
            "load_s",
        ],
    )
    steps = [row for row in rows if row["case"] == "push affecting many: steps"]
    if steps:
        table(
            steps,
            [
                "db",
                "total_ms",
                *(f"{name}_ms" for name in STEPS),
                "matching_ms",
                *(f"{name}_ms" for name in STATEMENTS),
            ],
        )
    save("fanout", head, rows)


if __name__ == "__main__":
    asyncio.run(main())
