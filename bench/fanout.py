"""Fan-out at scale, in process: PolicyService over a Store with the embedded router.

    .venv/bin/python bench/fanout.py [--db sqlite postgres] [--subs 100000] [--sets 10000] \
        [--rounds 3]

The store is seeded by bulk insert with ``--subs`` subscriptions in ``--sets`` distinct filter
sets (``{"policy-id": ["bench.p<j>"], "policy-type": ["bench.type.<j % 10>"]}``), each on its
own topic, plus one subscription alone on ``bench.single``, and ten base policies. Then:

- push affecting 10% (``bench.type.0``: with the defaults 1,000 filter sets, 10,000
  subscribers): the whole ``deploy`` call (until every snapshot is committed), the part spent
  matching and building the snapshots, the part spent in the SQL statements and the commit,
  and snapshots per second; then (unless ``--no-breakdown``) the same push again, split into
  its steps: matching, the store's statements (``put_policies``, ``append``,
  ``mark_published``, ``outbox_add``), the commit, the router's ``committed`` after it (waking
  readers, keeping the topics' tails), and the rest (``other``: revision, diff, the service's
  own bookkeeping);
- push affecting one subscriber (``bench.single``), with ``--subs`` subscriptions and with 10.

PostgreSQL runs in a scratch database (created, then dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
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

sys.path.insert(0, str(ROOT))

from policy_pubsub.models import ToscaPolicy
from policy_pubsub.routers.embedded import EmbeddedRouter
from policy_pubsub.service import PolicyService
from policy_pubsub.store import Store
from policy_pubsub.store.database import WriteTx

STEPS = ("put_policies", "append", "mark_published", "outbox_add")


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


class Timed:
    """Wraps the service's matching step to time it apart from the SQL work."""

    def __init__(self, service: PolicyService) -> None:
        self.matching = 0.0
        inner = service._snapshots_for_change

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.matching += time.perf_counter() - started

        service._snapshots_for_change = timed  # type: ignore[method-assign]


class Steps:
    """Times the store's write statements, the commit and the router's ``committed``, while
    in use as a context manager.
    """

    def __init__(self, service: PolicyService, router: EmbeddedRouter) -> None:
        self.seconds: dict[str, float] = {}
        self._service = service
        self._router = router
        self._originals = {name: getattr(WriteTx, name) for name in STEPS}

    def __enter__(self) -> Steps:
        for name, inner in self._originals.items():
            setattr(WriteTx, name, self._timed_async(name, inner))
        self._router.committed = self._timed("committed", self._router.committed)  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        for name, inner in self._originals.items():
            setattr(WriteTx, name, inner)
        del self._router.committed

    def _timed(self, name: str, inner: Any) -> Any:
        seconds = self.seconds

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started

        return timed

    def _timed_async(self, name: str, inner: Any) -> Any:
        seconds = self.seconds

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await inner(*args, **kwargs)
            finally:
                seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started

        return timed

    def commit_seconds(self) -> float:
        found = self._service._metrics.registry.get_sample_value("policy_pubsub_commit_seconds_sum")
        return float(found or 0.0)


async def _steps(
    service: PolicyService, router: EmbeddedRouter, timed: Timed, n: int, rounds: int
) -> dict[str, Any]:
    """The push affecting many again, timed step by step (medians over the rounds)."""
    samples: dict[str, list[float]] = {}
    for r in range(rounds):
        push = ToscaPolicy.model_validate(policy("bench.push", "bench.type.0", 1000 + r))
        with Steps(service, router) as steps:
            timed.matching = 0.0
            committed_before = steps.commit_seconds()
            started = time.perf_counter()
            await service.deploy([push])
            total = time.perf_counter() - started
            commit = steps.commit_seconds() - committed_before
        parts = {
            "matching": timed.matching,
            **{name: steps.seconds.get(name, 0.0) for name in STEPS},
            "commit": commit,
            "committed": steps.seconds.get("committed", 0.0),
        }
        found = {"total": total, **parts, "other": total - sum(parts.values())}
        for name, seconds in found.items():
            samples.setdefault(name, []).append(seconds)
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
    service = PolicyService(store, router)
    rows = []
    try:
        await router.start()
        started = time.perf_counter()
        await service.start()
        loaded = time.perf_counter() - started
        timed = Timed(service)
        totals, matchings, notified = [], [], 0
        for r in range(rounds):
            push = ToscaPolicy.model_validate(policy("bench.push", "bench.type.0", r))
            timed.matching = 0.0
            started = time.perf_counter()
            result = await service.deploy([push])
            totals.append(time.perf_counter() - started)
            matchings.append(timed.matching)
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
                "seed_s": seeded,
                "load_s": loaded,
            }
        )
        if breakdown:
            rows.append(await _steps(service, router, timed, n, rounds))
        singles = []
        for r in range(max(20, rounds)):
            push = ToscaPolicy.model_validate(policy("bench.single", "bench.other", r))
            started = time.perf_counter()
            result = await service.deploy([push])
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
                "matching_ms",
                *(f"{name}_ms" for name in STEPS),
                "commit_ms",
                "committed_ms",
                "other_ms",
            ],
        )
    save("fanout", head, rows)


if __name__ == "__main__":
    asyncio.run(main())
