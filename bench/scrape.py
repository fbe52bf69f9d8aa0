"""What a ``/metrics`` scrape costs with many subscription topics.

    .venv/bin/python bench/scrape.py [--db sqlite postgres] [--topics 10000] [--scrapes 10]

The store is seeded by bulk insert with ``--topics`` subscriptions, each on its own topic, each
topic holding ``--messages`` messages and one consumer group: every second group has read them
all, the others the first one, so the lags are a mix of 0 and ``--messages - 1``. Then the
server ``serve`` runs (bench/_serve.py, consumer lag read at every scrape) answers ``--scrapes``
``GET /metrics`` one after the other, each timed from the request to the last byte, and the
server's CPU time over them is read from /proc. Each database is run twice in one go: with the
consumer lag read per topic (``Router.stats`` per subscription topic, as scrapes did before
``Router.lags``; ``_serve.py --per-topic-lag``), then in bulk (``Router.lags``). Both must
report the same total lag (when the per-topic read finishes within its 5 s budget); the run
stops if they do not.
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
    ROOT,
    Conn,
    children,
    cpu_seconds,
    free_port,
    header,
    median,
    pct,
    pg_database,
    pg_drop,
    save,
    seed,
    serve_policy_pubsub,
    table,
)

sys.path.insert(0, str(ROOT))

LAG_TOTAL = "policy_pubsub_consumer_lag_total "
LAG_TOPICS = "policy_pubsub_consumer_lag_topics "


async def _seed(url: str, topics: int, per_topic: int) -> None:
    """Subscriptions, then each topic's messages, head and consumer group, in bulk."""
    from sqlalchemy import insert, update

    from policy_pubsub.store import Store
    from policy_pubsub.store.tables import consumer_groups, messages
    from policy_pubsub.store.tables import topics as topics_table

    await seed(
        url, [(f"s-{i}", f"t-{i}", [{"policy-type": ["bench.type"]}]) for i in range(topics)]
    )
    store = Store(url)
    await store.open()
    at = int(time.time() * 1000)
    body = json.dumps({"policies": [], "revision": 1, "padding": "x" * 400})
    try:
        async with store.write() as tx:
            await tx.conn.execute(update(topics_table).values(last_offset=per_topic))
            for start in range(0, topics, 2000):
                block = range(start, min(topics, start + 2000))
                await tx.conn.execute(
                    insert(messages),
                    [
                        {
                            "topic": f"t-{i}",
                            "seq": seq,
                            "key": f"s-{i}",
                            "revision": seq,
                            "body": body,
                            "created_at": at,
                        }
                        for i in block
                        for seq in range(1, per_topic + 1)
                    ],
                )
                await tx.conn.execute(
                    insert(consumer_groups),
                    [
                        {
                            "topic": f"t-{i}",
                            "name": "g",
                            "position": per_topic if i % 2 == 0 else 1,
                            "last_consumed_at": at,
                        }
                        for i in block
                    ],
                )
    finally:
        await store.close()


async def _scrape(port: int, scrapes: int) -> tuple[list[float], int, int]:
    """Each scrape's time, and the last one's lag total and topics read."""
    conn = await Conn.open(port)
    times: list[float] = []
    total = read = -1
    try:
        for _ in range(scrapes):
            started = time.perf_counter()
            status, body = await conn.request("GET", "/metrics")
            times.append(time.perf_counter() - started)
            if status != 200:
                raise SystemExit(f"GET /metrics answered {status}")
            for line in body.decode().splitlines():
                if line.startswith(LAG_TOTAL):
                    total = int(float(line[len(LAG_TOTAL) :]))
                elif line.startswith(LAG_TOPICS):
                    read = int(float(line[len(LAG_TOPICS) :]))
    finally:
        await conn.close()
    return times, total, read


def run(db: str, topics: int, per_topic: int, scrapes: int, tmp: Path) -> list[dict[str, Any]]:
    name = "pp_bench_scrape"
    url = f"sqlite+aiosqlite:///{tmp / 'scrape.db'}" if db == "sqlite" else pg_database(name)
    rows: list[dict[str, Any]] = []
    try:
        asyncio.run(_seed(url, topics, per_topic))
        for mode, extra in (("per topic", ["--per-topic-lag"]), ("bulk", [])):
            port = free_port()
            with children() as started:
                server = serve_policy_pubsub(
                    port,
                    url,
                    tmp / f"server-{len(rows)}.log",
                    extra=["--metrics-lag-refresh", "0", *extra],
                )
                started.append(server)
                asyncio.run(_scrape(port, 1))  # warm-up: the first scrape registers families
                cpu = cpu_seconds(server.process.pid)
                times, total, read = asyncio.run(_scrape(port, scrapes))
                cpu = cpu_seconds(server.process.pid) - cpu
            rows.append(
                {
                    "db": db,
                    "topics": topics,
                    "lag read": mode,
                    "scrape p50 (ms)": median(times) * 1000,
                    "scrape max (ms)": pct(times, 1.0) * 1000,
                    "server CPU per scrape (ms)": cpu / scrapes * 1000,
                    "topics read": read,
                    "lag total": total,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    finally:
        if db == "postgres":
            pg_drop(name)
    # The per-topic read may run out of its time budget; whatever it read must agree.
    expected = (topics // 2) * (per_topic - 1)
    for row in rows:
        whole = row["topics read"] == topics
        if (whole and row["lag total"] != expected) or (row["lag read"] == "bulk" and not whole):
            raise SystemExit(f"{row['lag read']}: lag total {row['lag total']}, not {expected}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--db", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"]
    )
    parser.add_argument("--topics", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=3, help="messages per topic")
    parser.add_argument("--scrapes", type=int, default=10)
    args = parser.parse_args()
    head = header()
    rows = []
    for db in args.db:
        with tempfile.TemporaryDirectory(prefix="bench-scrape-") as tmp:
            rows.extend(run(db, args.topics, args.messages, args.scrapes, Path(tmp)))
    table(
        rows,
        [
            "db",
            "topics",
            "lag read",
            "scrape p50 (ms)",
            "scrape max (ms)",
            "server CPU per scrape (ms)",
            "topics read",
            "lag total",
        ],
    )
    save("scrape", head, rows)


if __name__ == "__main__":
    main()
