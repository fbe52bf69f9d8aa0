"""Two replicas on one PostgreSQL database: what a change made on one costs the other, and a
subscribe storm; the code under test against another version of it, in the same run.

    .venv/bin/python bench/replicas.py [--subs 20000] [--pushes 30] [--storm 3000] \
        [--clients 32] [--storm-seconds 30] [--before REF] [--only after]

For each version (``before``: the git ref ``--before``, default ``main``, exported to a
scratch directory; ``after``: this tree), in a scratch PostgreSQL database seeded by bulk
insert with ``--subs`` subscriptions (each on its own topic, filtering on one of 1,000
policy ids; one in a thousand filters on ``bench.push``), two servers as ``serve`` runs them
(bench/_serve.py, embedded router), A and B:

- ``push A``: ms per ``POST /pap/v1/policies`` of one small policy (``bench.push``, a new
  threshold each time, a snapshot for each of its ``--subs``/1000 subscribers), all on A;
- ``push A/B``: the same, alternating between A and B (what a load balancer does);
- ``decide B quiet``: ms per ``POST /decision/v1`` on B with nothing changing;
- ``decide B after push A``: the same on B, sent as soon as a push on A was answered, and how
  many of those answered the policy as it was before that push (``stale``);
- ``subscribes/s``: ``--storm`` new subscriptions from ``--clients`` connections, half on
  each replica, until all are answered (or ``--storm-seconds`` passed: the rate is then of
  those answered); and the same on one server over SQLite.

Medians (and p90) of the latencies; client and servers share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PYTHON,
    ROOT,
    Child,
    Conn,
    children,
    free_port,
    header,
    pct,
    pg_database,
    pg_drop,
    policy,
    save,
    table,
    wait_http,
)

DECIDE = json.dumps(
    {
        "ONAPName": "DCAE",
        "ONAPComponent": "tca",
        "ONAPInstance": "bench",
        "action": "configure",
        "resource": {"policy-id": ["bench.push"]},
    }
).encode()

SEED = """
import asyncio, sys
sys.path.insert(0, {bench!r})
from _common import policy, seed
def ids(i):
    return ["bench.push" if i % 1000 == 0 else f"bench.p{{i % 1000}}"]
subs = [(f"s-{{i}}", f"t-{{i}}", [{{"policy-id": ids(i)}}]) for i in range({subs})]
asyncio.run(seed({url!r}, subs, [policy(f"bench.p{{j}}", "bench.type", j) for j in range(10)]))
"""


def _tree(version: str, before: str, tmp: Path) -> Path:
    """The source tree of a version: this one, or ``before`` exported from git."""
    if version == "after":
        return ROOT
    tree = tmp / "before"
    if not tree.exists():
        tree.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", before], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def _serve(tree: Path, url: str, log: Path) -> tuple[Child, int]:
    port = free_port()
    child = Child(
        [
            PYTHON,
            str(tree / "bench" / "_serve.py"),
            "--port",
            str(port),
            "--database-url",
            url,
            "--log-level",
            "warning",
        ],
        log=log,
    )
    wait_http(port, "/healthcheck")
    return child, port


def _median_ms(samples: list[float]) -> float:
    return pct(samples, 0.5) * 1000


def _p90_ms(samples: list[float]) -> float:
    return pct(samples, 0.9) * 1000


class Replica:
    """A keep-alive connection to one server, opened again if the server closed it while it
    was idle (its keep-alive timeout), before a request is sent.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: Conn | None = None

    async def request(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = await Conn.open(self.port)
            try:
                return await self.conn.request(method, path, body)
            except (asyncio.IncompleteReadError, ConnectionError):
                await self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


async def _push(conn: Replica, n: int) -> float:
    body = json.dumps({"policies": [policy("bench.push", "bench.type", 1_000_000 + n)]}).encode()
    started = time.perf_counter()
    status, answer = await conn.request("POST", "/pap/v1/policies", body)
    if status != 200:
        raise RuntimeError(f"push answered {status}: {answer[:200]!r}")
    return time.perf_counter() - started


async def _decide(conn: Replica, threshold: int | None = None) -> float:
    """Seconds a decision took; if it did not answer ``threshold`` (the last push's), also
    counted in ``STALE``.
    """
    started = time.perf_counter()
    status, answer = await conn.request("POST", "/decision/v1", DECIDE)
    took = time.perf_counter() - started
    if status != 200:
        raise RuntimeError(f"decision answered {status}: {answer[:200]!r}")
    if threshold is not None:
        pushed = json.loads(answer)["policies"]["bench.push"]["properties"]["threshold"]
        STALE[0] += pushed != threshold
    return took


STALE = [0]  # decisions that answered the push before the last one


async def _replica_latencies(port_a: int, port_b: int, pushes: int) -> dict[str, Any]:
    a, b = Replica(port_a), Replica(port_b)
    n = 0
    try:
        for _ in range(3):  # warm up both
            await _push(a, n)
            await _push(b, n + 1)
            await _decide(b)
            n += 2
        on_a = []
        for _ in range(pushes):
            on_a.append(await _push(a, n))
            n += 1
        alternating = []
        for i in range(pushes):
            alternating.append(await _push(a if i % 2 == 0 else b, n))
            n += 1
        await _decide(b)
        quiet = [await _decide(b) for _ in range(pushes)]
        after_push = []
        STALE[0] = 0
        for _ in range(pushes):
            await _push(a, n)
            after_push.append(await _decide(b, 1_000_000 + n))
            n += 1
    finally:
        await a.close()
        await b.close()
    return {
        "push A ms": _median_ms(on_a),
        "push A/B ms": _median_ms(alternating),
        "push A/B p90": _p90_ms(alternating),
        "decide B quiet ms": _median_ms(quiet),
        "decide B after push A ms": _median_ms(after_push),
        "decide after p90": _p90_ms(after_push),
        "stale after push A": f"{STALE[0]}/{pushes}",
    }


async def _storm(
    ports: list[int], count: int, clients: int, prefix: str, seconds: float
) -> tuple[float, int]:
    """Subscribes per second and how many were made: ``count`` new subscriptions from
    ``clients`` connections, or as many as were answered within ``seconds``.
    """
    conns = [Replica(ports[c % len(ports)]) for c in range(clients)]
    queue = list(range(count))
    deadline = time.perf_counter() + seconds
    done = 0

    async def client(conn: Replica) -> None:
        nonlocal done
        while queue and time.perf_counter() < deadline:
            i = queue.pop()
            body = json.dumps(
                {
                    "subscriber_topic": f"storm-{prefix}-{i}",
                    "ONAPName": "DCAE",
                    "policy-filters": [{"policy-id": [f"bench.p{i % 10}"]}],
                }
            ).encode()
            status, answer = await conn.request(
                "POST", f"/decision/v1/subscription/storm-{prefix}-{i}", body
            )
            if status not in (200, 201):
                raise RuntimeError(f"subscribe answered {status}: {answer[:200]!r}")
            done += 1

    started = time.perf_counter()
    try:
        await asyncio.gather(*(client(conn) for conn in conns))
    finally:
        for conn in conns:
            await conn.close()
    return done / (time.perf_counter() - started), done


def run(version: str, tree: Path, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    name = f"pp_bench_replicas_{version}_{os.getpid()}"  # runs at once do not clash
    url = pg_database(name)
    row: dict[str, Any] = {"version": version, "subs": args.subs}
    try:
        with children() as started:  # the first start creates the schema of this version
            started.append(_serve(tree, url, tmp / f"{version}-schema.log")[0])
        seed = SEED.format(bench=str(tree / "bench"), subs=args.subs, url=url)
        subprocess.run([PYTHON, "-c", seed], check=True)
        with children() as started:
            a, port_a = _serve(tree, url, tmp / f"{version}-a.log")
            started.append(a)
            b, port_b = _serve(tree, url, tmp / f"{version}-b.log")
            started.append(b)
            row |= asyncio.run(_replica_latencies(port_a, port_b, args.pushes))
            rate, done = asyncio.run(
                _storm([port_a, port_b], args.storm, args.clients, version, args.storm_seconds)
            )
            row["subscribes/s PG A+B"], row["made PG"] = rate, done
    finally:
        pg_drop(name)
    sqlite = f"sqlite+aiosqlite:///{tmp / f'{version}.db'}"
    with children() as started:
        server, port = _serve(tree, sqlite, tmp / f"{version}-sqlite.log")
        started.append(server)
        rate, done = asyncio.run(
            _storm([port], args.storm, args.clients, version, args.storm_seconds)
        )
        row["subscribes/s SQLite"], row["made SQLite"] = rate, done
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subs", type=int, default=20_000)
    parser.add_argument("--pushes", type=int, default=30)
    parser.add_argument("--storm", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument(
        "--storm-seconds", type=float, default=30.0, help="stop a storm after this long"
    )
    parser.add_argument("--before", default="main", help="the git ref to compare with")
    parser.add_argument("--only", choices=["before", "after"], help="run one version")
    args = parser.parse_args()
    head = header()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        for version in [args.only] if args.only else ["before", "after"]:
            rows.append(run(version, _tree(version, args.before, tmp), args, tmp))
            print(rows[-1], flush=True)
    table(
        rows,
        [
            "version",
            "subs",
            "push A ms",
            "push A/B ms",
            "push A/B p90",
            "decide B quiet ms",
            "decide B after push A ms",
            "decide after p90",
            "stale after push A",
            "subscribes/s PG A+B",
            "made PG",
            "subscribes/s SQLite",
            "made SQLite",
        ],
    )
    save("replicas", head, rows)


if __name__ == "__main__":
    main()
