"""Disk and memory over time: a server under steady pushes and subscription churn.

    .venv/bin/python bench/soak.py [--minutes 1] [--components 1000] [--pushes 20] \
        [--churn 2] [--retention 120] [--maintenance 10] [--sample 10]

The server ``serve`` runs (bench/_serve.py) on a fresh SQLite file, with ``retention_seconds``
``--retention`` and ``maintenance_interval_seconds`` ``--maintenance`` (the cadence of
retention, compaction and the SQLite file upkeep). ``--components`` components, each one
keep-alive connection long-polling its own topic (``GET /events/<topic>/g/c``, 5 s timeout),
subscribed with a filter on one of ten policy types. ``--pushes`` times a second a PAP push
changes one policy of one type (in turn), which notifies a tenth of the components.
``--churn`` times a second a component unsubscribes and subscribes again under a new id on a
new topic, and polls that one from then on. Every ``--sample`` seconds the run notes the
database file and its WAL, the live data (pages in use: ``page_count - freelist_count``,
read through a read-only connection), the rows of the topic tables and the server's RSS.
The verdict: the largest file + WAL against twice the largest live data.

``--tracemalloc FRAMES`` runs the server with its allocations traced (bench/_serve.py), notes
them at the first sample (after warm-up), and at the end prints what grew since: the
tracebacks that hold most more memory, and the object types with most more live objects.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Conn,
    children,
    free_port,
    header,
    policy,
    request,
    rss_mb,
    save,
    seed,
    serve_policy_pubsub,
    table,
)

TYPES = 10
POLL_MS = 5000


def _filters(n: int) -> list[dict[str, Any]]:
    return [{"policy-type": [f"soak.type.{n % TYPES}"]}]


def _disk(path: Path) -> dict[str, float]:
    """File, WAL and live data (MB), and the rows of the topic tables."""
    wal = path.with_name(path.name + "-wal")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as conn:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        counts = {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("subscriptions", "topics", "messages", "consumer_groups")
        }
    conn.close()
    mb = 1024 * 1024
    return {
        "file_mb": path.stat().st_size / mb,
        "wal_mb": (wal.stat().st_size if wal.exists() else 0) / mb,
        "live_mb": (pages - free) * size / mb,
        **counts,
    }


class Soak:
    def __init__(self, port: int, args: argparse.Namespace) -> None:
        self.port = port
        self.args = args
        self.topics = [f"soak-{i}" for i in range(args.components)]
        self.next_id = args.components
        self.stop = asyncio.Event()
        self.delivered = 0
        self.pushed = 0
        self.churned = 0
        self.errors = 0
        self.grown: dict[str, Any] | None = None  # /_bench/memory's answer at the end

    async def poller(self, slot: int) -> None:
        conn = await Conn.open(self.port)
        try:
            while not self.stop.is_set():
                path = f"/events/{self.topics[slot]}/g/c?timeout={POLL_MS}"
                status, body = await conn.request("GET", path)
                if status == 200:
                    self.delivered += len(json.loads(body))
                else:
                    self.errors += 1
                    await asyncio.sleep(0.5)
        finally:
            await conn.close()

    async def pusher(self) -> None:
        conn = await Conn.open(self.port)
        interval = 1 / self.args.pushes
        at = time.monotonic()
        try:
            while not self.stop.is_set():
                n = self.pushed
                changed = policy(f"soak.p{n % TYPES}", f"soak.type.{n % TYPES}", n)
                body = json.dumps({"policies": [changed]}).encode()
                status, _ = await conn.request("POST", "/pap/v1/policies", body)
                self.pushed += 1
                self.errors += status != 200
                at += interval
                await asyncio.sleep(max(0.0, at - time.monotonic()))
        finally:
            await conn.close()

    async def churner(self) -> None:
        if self.args.churn <= 0:
            return
        conn = await Conn.open(self.port)
        interval = 1 / self.args.churn
        at = time.monotonic()
        try:
            while not self.stop.is_set():
                slot = self.churned % self.args.components
                old = self.topics[slot].removeprefix("soak-")
                new = self.next_id
                self.next_id += 1
                request = {"subscriber_topic": f"soak-{new}", "policy-filters": _filters(new)}
                status, _ = await conn.request(
                    "POST", f"/decision/v1/subscription/s-{new}", json.dumps(request).encode()
                )
                self.errors += status != 201
                self.topics[slot] = f"soak-{new}"
                status, _ = await conn.request("DELETE", f"/decision/v1/subscription/s-{old}")
                self.errors += status != 204
                self.churned += 1
                at += interval
                await asyncio.sleep(max(0.0, at - time.monotonic()))
        finally:
            await conn.close()

    async def run(self, sample: Any) -> None:
        tasks = [asyncio.create_task(self.poller(i)) for i in range(self.args.components)]
        tasks += [asyncio.create_task(self.pusher()), asyncio.create_task(self.churner())]
        started = time.monotonic()
        end = started + self.args.minutes * 60
        try:
            while time.monotonic() < end:
                await asyncio.sleep(min(self.args.sample, max(0.0, end - time.monotonic())))
                sample(time.monotonic() - started, self)
                if self.args.tracemalloc and self.grown is None:
                    await request(self.port, "POST", "/_bench/memory")
                    self.grown = {}
            if self.args.tracemalloc:
                _, body = await request(self.port, "GET", "/_bench/memory?top=20")
                self.grown = json.loads(body)
        finally:
            self.stop.set()
            await asyncio.wait(tasks, timeout=POLL_MS / 1000 + 5)
            for task in tasks:
                task.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--components", type=int, default=1000)
    parser.add_argument("--pushes", type=float, default=20.0, help="PAP pushes per second")
    parser.add_argument("--churn", type=float, default=2.0, help="re-subscriptions per second")
    parser.add_argument("--retention", type=float, default=120.0)
    parser.add_argument("--maintenance", type=float, default=10.0)
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    parser.add_argument(
        "--tracemalloc",
        type=int,
        default=0,
        metavar="FRAMES",
        help="trace the server's allocations; print what grew after the first sample",
    )
    args = parser.parse_args()
    head = header()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        path = Path(tmp) / "soak.db"
        url = f"sqlite+aiosqlite:///{path}"
        asyncio.run(
            seed(url, [(f"s-{i}", f"soak-{i}", _filters(i)) for i in range(args.components)])
        )
        port = free_port()
        with children() as started:
            server = serve_policy_pubsub(
                port,
                url,
                Path(tmp) / "server.log",
                extra=[
                    "--retention",
                    str(args.retention),
                    "--maintenance-interval",
                    str(args.maintenance),
                    *(["--tracemalloc", str(args.tracemalloc)] if args.tracemalloc else []),
                ],
            )
            started.append(server)

            def sample(elapsed: float, soak: Soak) -> None:
                row = {
                    "t_s": round(elapsed),
                    **_disk(path),
                    "rss_mb": rss_mb(server.process.pid),
                    "pushes": soak.pushed,
                    "churned": soak.churned,
                    "delivered": soak.delivered,
                    "errors": soak.errors,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)

            soak = Soak(port, args)
            asyncio.run(soak.run(sample))
    columns = ["t_s", "file_mb", "wal_mb", "live_mb", "subscriptions", "topics", "messages"]
    columns += ["consumer_groups", "rss_mb", "pushes", "churned", "delivered", "errors"]
    table(rows, columns)
    peak_disk = max(r["file_mb"] + r["wal_mb"] for r in rows)
    peak_live = max(r["live_mb"] for r in rows)
    verdict = {
        "peak_file_plus_wal_mb": peak_disk,
        "peak_live_mb": peak_live,
        "ratio": peak_disk / peak_live,
        "goal": "<= 2",
        "components": args.components,
        "minutes": args.minutes,
    }
    print(json.dumps(verdict))
    if soak.grown:
        _print_grown(soak.grown)
        verdict["grown"] = soak.grown
    save("soak", head, [*rows, verdict])


def _print_grown(grown: dict[str, Any]) -> None:
    then, now = grown["traced_mb_then"], grown["traced_mb_now"]
    print(f"traced: {then:.1f} MB at the first sample, {now:.1f} MB at the end")
    print("grew most (KB, blocks, where: innermost frame first, then its callers):")
    for entry in grown["grown"]:
        print(
            f"  {entry['kb']:>9} KB {entry['count']:>7}  "
            + "\n      <- ".join(reversed(entry["frames"][-4:]))
        )
    print("live objects grown most:", ", ".join(f"{name} {n:+}" for name, n in grown["types"]))


if __name__ == "__main__":
    main()
