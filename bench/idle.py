"""Idle long-polls: N (10,000) held by one policy-pubsub server, then one push to all of them.

    .venv/bin/python bench/idle.py [--n 10000] [--workers 5] [--rounds 3] [--stalls FILE]

The N subscriptions (SQLite, embedded router) are seeded by bulk insert, each on its own topic.
``--workers`` client processes hold one keep-alive HTTP/1.1 connection per component (the
asyncio-streams client of bench/_common.py; the file-descriptor limit is raised). Figures:
server RSS before the polls and with all N held; event-loop lag (a 5 ms timer in the server,
bench/_serve.py) p99 and max while idle and during the push window (from the push until the
last component has its answer); the same window's CPU time the server's event-loop thread
used between two of those timer wake-ups, p99 and max (how long the synchronous stretches
were as the processor saw them: on a loaded machine the lag also counts the time other
processes had the cores); and the push-to-all time, median over rounds.

Each client process connects from loopback addresses of its own (127.w.0.*), so 50,000
connections to the one port do not run out of ephemeral ports; the server's
``max_held_polls`` and ``max_incomplete_requests`` are raised to twice N. ``--stalls FILE``:
where the server's event loop was while stalled during the pushes (bench/_serve.py
``--stalls``), stacks with their sample counts, most first, written to FILE as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    children,
    free_port,
    header,
    http_workers,
    median,
    pct,
    policy,
    raise_nofile,
    request,
    rss_mb,
    save,
    seed,
    serve_policy_pubsub,
    split,
    table,
    wait_held,
)


def _lag(port: int, since: float, key: str = "lag_ms") -> list[float]:
    status, body = asyncio.run(request(port, "GET", f"/_bench/lag?since={since}"))
    return list(json.loads(body)[key]) if status == 200 else []


def _stalls(port: int, since: float) -> Counter[tuple[str, ...]]:
    status, body = asyncio.run(request(port, "GET", f"/_bench/stalls?since={since}"))
    if status != 200:
        return Counter()
    return Counter({tuple(stack): count for count, stack in json.loads(body)["stacks"]})


def run(
    n: int,
    nworkers: int,
    rounds: int,
    tmp: Path,
    loop: str,
    protocol: str = "guarded",
    stalls: Counter[tuple[str, ...]] | None = None,
) -> dict[str, Any]:
    url = f"sqlite+aiosqlite:///{tmp / 'idle.db'}"
    subs = [(f"comp-{i}", f"comp-{i}", [{"policy-id": ["bench.idle"]}]) for i in range(n)]
    asyncio.run(seed(url, subs, [policy("bench.idle", "bench.type", 0)]))
    port = free_port()
    with children() as started:
        extra = ["--unguarded"] if protocol == "unguarded" else []
        if stalls is not None:
            extra.append("--stalls")
        server = serve_policy_pubsub(port, url, tmp / "server.log", loop=loop, extra=extra)
        started.append(server)
        time.sleep(1)
        rss_start = rss_mb(server.pid)
        workers = http_workers(
            [(port, f, c) for f, c in split(n, nworkers)], tmp / "workers.log", own_sources=True
        )
        started.extend(workers.children)
        workers.expect("ready")
        alls, push_p99, push_max, idle_p99, rss_held = [], [], [], [], []
        cpu_p99, cpu_max = [], []
        for r in range(rounds):
            workers.ask(f"poll {r + 1}")
            workers.expect("sent")
            wait_held(port, n)
            idle_from = time.monotonic()
            time.sleep(2)
            rss_held.append(rss_mb(server.pid))
            idle_p99.append(pct(_lag(port, idle_from), 0.99))
            pushed = time.monotonic()
            status, body = asyncio.run(
                request(
                    port,
                    "POST",
                    "/pap/v1/policies",
                    {"policies": [policy("bench.idle", "bench.type", r + 1)]},
                )
            )
            if status != 200:
                raise RuntimeError(f"push failed: {status} {body[:200]!r}")
            workers.ask("collect")
            answers = workers.expect("arrived")
            arrived = [a for answer in answers for a in answer["arrived"] if a]
            done = max(arrived)
            alls.append(done - pushed if len(arrived) == n else float("inf"))
            window = [v for v in _lag(port, pushed)][: int((done - pushed) / 0.005) + 2]
            push_p99.append(pct(window, 0.99))
            push_max.append(max(window, default=float("nan")))
            cpu = _lag(port, pushed, "cpu_ms")[: len(window)]
            cpu_p99.append(pct(cpu, 0.99))
            cpu_max.append(max(cpu, default=float("nan")))
            if stalls is not None:
                stalls.update(_stalls(port, pushed))
        return {
            "n": n,
            "loop": loop,
            "protocol": protocol,
            "rss_start_mb": rss_start,
            "rss_held_mb": max(rss_held),
            "idle_lag_p99_ms": median(idle_p99),
            "push_lag_p99_ms": median(push_p99),
            "push_lag_max_ms": median(push_max),
            "push_cpu_p99_ms": median(cpu_p99),
            "push_cpu_max_ms": median(cpu_max),
            "push_to_all_s": median(alls),
            "all_rounds_s": [round(a, 3) for a in alls],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--loop", nargs="+", default=["auto"], choices=["auto", "asyncio", "uvloop"]
    )
    parser.add_argument(
        "--protocol",
        nargs="+",
        default=["guarded"],
        choices=["guarded", "unguarded"],
        help="unguarded: without the slow-client deadlines (_serve.py --unguarded)",
    )
    parser.add_argument("--stalls", type=Path, help="where the loop stalled, to FILE (JSON)")
    args = parser.parse_args()
    files = raise_nofile(4 * args.n)
    print("file descriptors:", files)
    if files < args.n + 1000:  # the server holds one connection per poll, plus its own files
        sys.exit(
            f"RLIMIT_NOFILE is {files} and cannot be raised here: the server cannot hold "
            f"{args.n} polls (raise the hard limit, ulimit -Hn, or run as root with "
            "CAP_SYS_RESOURCE)"
        )
    # The client workers open all their connections before any sends a request: that many
    # connections waiting for headers at once, past max_incomplete_requests (1000), would be
    # closed by the slow-client guard (policy_pubsub/connections.py) as crowding.
    os.environ["POLICY_PUBSUB_MAX_INCOMPLETE_REQUESTS"] = str(2 * args.n)
    # The server holds at most max_held_polls (20,000 by default) at once.
    os.environ["POLICY_PUBSUB_MAX_HELD_POLLS"] = str(max(20_000, 2 * args.n))
    stalls: Counter[tuple[str, ...]] | None = Counter() if args.stalls else None
    head = header()
    rows = []
    for loop in args.loop:
        for protocol in args.protocol:
            with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp:
                rows.append(
                    run(args.n, args.workers, args.rounds, Path(tmp), loop, protocol, stalls)
                )
            print(json.dumps(rows[-1]), flush=True)
    table(
        rows,
        [
            "n",
            "loop",
            "protocol",
            "rss_start_mb",
            "rss_held_mb",
            "idle_lag_p99_ms",
            "push_lag_p99_ms",
            "push_lag_max_ms",
            "push_cpu_p99_ms",
            "push_cpu_max_ms",
            "push_to_all_s",
        ],
    )
    save("idle", head, rows)
    if args.stalls and stalls is not None:
        total = sum(stalls.values())
        args.stalls.write_text(
            json.dumps(
                {
                    "samples": total,
                    "stacks": [[count, list(stack)] for stack, count in stalls.most_common()],
                },
                indent=1,
            )
        )
        print(f"stalls: {total} samples, to {args.stalls}")


if __name__ == "__main__":
    main()
