"""PAP throughput: acknowledged (durable) pushes per second through HTTP.

    .venv/bin/python bench/pap.py [--db sqlite postgres] [--subs 10 1000] [--clients 4 32] \
        [--policies 4] [--seconds 5]

For each number in ``--clients``, that many keep-alive connections each send
``POST /pap/v1/policies`` one after the other for ``--seconds``; each push changes one of
``--policies`` policies (client c changes policy c modulo ``--policies``, with a new
threshold each time), of the type every subscriber filters on, so every push notifies all
``--subs`` subscribers and every snapshot holds ``--policies`` policies whatever the number
of clients. A push counts once its 200 arrived, i.e. once the change and its snapshots are
committed. ``cpu_us_per_push`` is the server's CPU time (every thread) per push, the figure a
busy machine disturbs least. The server is the one ``serve`` runs (bench/_serve.py), on
SQLite or a scratch PostgreSQL database. Pushes that arrive while a transaction commits share
the next one (group commit), so more clients give more pushes per commit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Conn,
    children,
    cpu_seconds,
    free_port,
    header,
    pct,
    pg_database,
    pg_drop,
    policy,
    save,
    seed,
    serve_policy_pubsub,
    table,
)


async def _drive(
    port: int, clients: int, policies: int, seconds: float
) -> tuple[int, int, list[float]]:
    deadline = time.monotonic() + seconds
    latencies: list[float] = []
    failed = 0

    async def client(c: int) -> int:
        nonlocal failed
        conn = await Conn.open(port)
        done = 0
        try:
            while time.monotonic() < deadline:
                # A new threshold each time: every push changes its policy.
                changed = policy(f"bench.pap{c % policies}", "bench.pap", c * 1_000_000 + done)
                body = json.dumps({"policies": [changed]})
                started = time.monotonic()
                status, _ = await conn.request("POST", "/pap/v1/policies", body.encode())
                latencies.append(time.monotonic() - started)
                if status == 200:
                    done += 1
                else:
                    failed += 1
        finally:
            await conn.close()
        return done

    counts = await asyncio.gather(*(client(c) for c in range(clients)))
    return sum(counts), failed, latencies


def run(
    db: str, subs: int, clients: int, policies: int, seconds: float, tmp: Path
) -> dict[str, Any]:
    url = f"sqlite+aiosqlite:///{tmp / 'pap.db'}" if db == "sqlite" else pg_database("pp_bench_pap")
    try:
        asyncio.run(
            seed(url, [(f"s-{i}", f"t-{i}", [{"policy-type": ["bench.pap"]}]) for i in range(subs)])
        )
        port = free_port()
        with children() as started:
            server = serve_policy_pubsub(port, url, tmp / "server.log")
            started.append(server)
            cpu = cpu_seconds(server.pid)
            started_at = time.monotonic()
            done, failed, latencies = asyncio.run(_drive(port, clients, policies, seconds))
            elapsed = time.monotonic() - started_at
            cpu = cpu_seconds(server.pid) - cpu
    finally:
        if db == "postgres":
            pg_drop("pp_bench_pap")
    return {
        "db": db,
        "subs": subs,
        "clients": clients,
        "policies": policies,
        "pushes": done,
        "failed": failed,
        "pushes_per_s": done / elapsed,
        "snapshots_per_s": done * subs / elapsed,
        "p50_ms": pct(latencies, 0.5) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
        # The server's CPU (all its threads) per push: what a loaded machine changes least.
        "cpu_us_per_push": cpu / done * 1e6 if done else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--db", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"]
    )
    parser.add_argument("--subs", type=int, nargs="+", default=[10, 1000])
    parser.add_argument("--clients", type=int, nargs="+", default=[4, 32])
    parser.add_argument(
        "--policies", type=int, default=4, help="policies the clients take turns to change"
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    head = header()
    rows = []
    for db in args.db:
        for subs in args.subs:
            for clients in args.clients:
                with tempfile.TemporaryDirectory(prefix="bench-pap-") as tmp:
                    rows.append(run(db, subs, clients, args.policies, args.seconds, Path(tmp)))
                print(json.dumps(rows[-1]), flush=True)
    table(
        rows,
        [
            "db",
            "subs",
            "clients",
            "policies",
            "pushes",
            "failed",
            "pushes_per_s",
            "snapshots_per_s",
            "p50_ms",
            "p99_ms",
            "cpu_us_per_push",
        ],
    )
    save("pap", head, rows)


if __name__ == "__main__":
    main()
