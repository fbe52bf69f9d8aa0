"""What one replica pays to follow another, in process: two services, each over its own Store
(its own engines and notification connection, as two processes have), on one scratch
PostgreSQL database; the code under test against another version of it, in the same run.

    .venv/bin/python bench/catch_up.py [--subs 20000] [--pushes 40] [--before REF] \
        [--only after]

The store is seeded as bench/replicas.py seeds it (``--subs`` subscriptions, one in a thousand
on ``bench.push``). Each push deploys ``bench.push`` on A with a new threshold; then:

- ``read ms``: B's store read of what changed since its revision (``StateRepository.since``),
  timed apart from everything else (B's own following is paused by holding its write lock);
  ``pooled read ms``, where the tree has the one-statement read: the same changes read as
  before it, in a pooled REPEATABLE READ transaction of several statements (the mark log in
  place of the marks scan);
- ``decide right after ms``: a decision on B sent the moment A's push returned, and how many
  of them (``stale``) answered the threshold of the push before;
- ``behind ms``: from A's push returning until B's state reached its revision without any
  read on B (none before the background catch-up: it then never does);
- ``decide later ms``: a decision on B 50 ms after the push (the notification arrived).

Medians, p90 beside; the loop, the database and the machine are shared, so compare within
one run. Each version runs in a child process of its own tree (``--before`` is exported from
git to a scratch directory).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PYTHON, ROOT, header, pct, pg_database, pg_drop, policy, save, table

BEHIND_LIMIT = 1.0  # seconds B may stay behind before "behind" counts it as never


def _ms(samples: list[float], q: float = 0.5) -> float:
    return pct(samples, q) * 1000 if samples else float("nan")


def _reached(state: Any, revision: int) -> bool:
    return bool(state.revision >= revision)


async def _until(condition: Callable[[], bool], limit: float) -> bool:
    """Whether ``condition`` became true within ``limit`` seconds (polled every 0.5 ms)."""
    deadline = time.perf_counter() + limit
    while True:
        if condition():
            return True
        if time.perf_counter() > deadline:
            return False
        await asyncio.sleep(0.0005)


async def measure(url: str, pushes: int) -> dict[str, Any]:
    from policy_pubsub.models import PolicyFilter, ToscaPolicy
    from policy_pubsub.routers.embedded import EmbeddedRouter
    from policy_pubsub.service import InStoreOutlet, PolicyService
    from policy_pubsub.store import Store

    def service(store: Store) -> PolicyService:
        router = EmbeddedRouter(
            store,
            retention_seconds=3600,
            maintenance_interval_seconds=3600,
            position_flush_seconds=0.05,
            max_message_bytes=1 << 20,
        )
        return PolicyService(store, router, InStoreOutlet(router))

    filters = [PolicyFilter.model_validate({"policy-id": "bench.push"})]
    store_a, store_b = Store(url), Store(url)
    await store_a.open()
    await store_b.open()
    a, b = service(store_a), service(store_b)
    await a.start()
    await b.start()
    n = 0

    async def push() -> tuple[int, int]:
        nonlocal n
        n += 1
        body = policy("bench.push", "bench.type", 1_000_000 + n)
        result = await a.deploy([ToscaPolicy.model_validate(body)])
        return result.revision, 1_000_000 + n

    def threshold(decided: dict[str, Any]) -> int:
        return int(decided["bench.push"]["properties"]["threshold"])

    try:
        notifications = store_b.notifications
        await _until(lambda: notifications is None or notifications.connected, 10.0)
        for _ in range(3):
            await push()
            await b.decide(filters)
        state = b._state
        reads: list[float] = []
        pooled: list[float] = []  # the same read as a pooled transaction of statements
        for _ in range(pushes):
            async with state.writing:  # B does not follow meanwhile
                before = state.revision
                await push()
                started = time.perf_counter()
                await store_b.state.since(before)
                reads.append(time.perf_counter() - started)
                if getattr(store_b.state, "_reader", None) is not None:
                    from policy_pubsub.store.state import changes_since

                    started = time.perf_counter()
                    async with store_b.read(consistent=True) as conn:
                        await changes_since(conn, before)
                    pooled.append(time.perf_counter() - started)
            await b.decide(filters)
        right_after: list[float] = []
        stale = 0
        for _ in range(pushes):
            await asyncio.sleep(0.05)
            _, value = await push()
            started = time.perf_counter()
            decided = await b.decide(filters)
            right_after.append(time.perf_counter() - started)
            stale += threshold(decided) != value
        behind: list[float] = []
        never = 0
        for _ in range(pushes):
            await asyncio.sleep(0.05)
            revision, _ = await push()
            started = time.perf_counter()
            if not await _until(functools.partial(_reached, state, revision), BEHIND_LIMIT):
                never += 1
            else:
                behind.append(time.perf_counter() - started)
            await b.decide(filters)
        later: list[float] = []
        for _ in range(pushes):
            await push()
            await asyncio.sleep(0.05)
            started = time.perf_counter()
            await b.decide(filters)
            later.append(time.perf_counter() - started)
    finally:
        await store_a.close()
        await store_b.close()
    return {
        "read ms": _ms(reads),
        "read p90": _ms(reads, 0.9),
        "pooled read ms": _ms(pooled),
        "decide right after ms": _ms(right_after),
        "right after p90": _ms(right_after, 0.9),
        "stale": f"{stale}/{pushes}",
        "behind ms": _ms(behind),
        "behind p90": _ms(behind, 0.9),
        "never": f"{never}/{pushes}",
        "decide later ms": _ms(later),
    }


def child(tree: str, url: str, pushes: int) -> None:
    sys.path.insert(0, tree)
    print(json.dumps(asyncio.run(measure(url, pushes))))


def run(version: str, tree: Path, args: argparse.Namespace) -> dict[str, Any]:
    name = f"pp_bench_catch_up_{version}_{os.getpid()}"
    url = pg_database(name)
    try:
        script = (
            "import sys; sys.path.insert(0, {tree!r}); sys.path.insert(1, {bench!r});"
            "import asyncio; from _common import seed, policy;"
            "ids = lambda i: ['bench.push' if i % 1000 == 0 else f'bench.p{{i % 1000}}'];"
            "subs = [(f's-{{i}}', f't-{{i}}', [{{'policy-id': ids(i)}}]) for i in range({subs})];"
            "asyncio.run(seed({url!r}, subs,"
            " [policy(f'bench.p{{j}}', 'bench.type', j) for j in range(10)]))"
        ).format(tree=str(tree), bench=str(tree / "bench"), subs=args.subs, url=url)
        subprocess.run([PYTHON, "-c", script], check=True, cwd=tree)
        done = subprocess.run(
            [PYTHON, str(Path(__file__).resolve()), "--child", str(tree), url, str(args.pushes)],
            capture_output=True,
            text=True,
            cwd=tree,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{version} failed:\n{done.stderr}")
        found: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
        return {"version": version, "subs": args.subs} | found
    finally:
        pg_drop(name)


def _tree(version: str, before: str, tmp: Path) -> Path:
    if version == "after":
        return ROOT
    tree = tmp / "before"
    tree.mkdir(exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", before], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subs", type=int, default=20_000)
    parser.add_argument("--pushes", type=int, default=40)
    parser.add_argument("--before", default="main", help="the git ref to compare with")
    parser.add_argument("--only", choices=["before", "after"], help="run one version")
    args = parser.parse_args()
    head = header()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for version in [args.only] if args.only else ["before", "after"]:
            rows.append(run(version, _tree(version, args.before, Path(scratch)), args))
            print(rows[-1], flush=True)
    table(rows, list(rows[0]))
    save("catch_up", head, rows)


if __name__ == "__main__":
    main()
