"""The policy-pubsub server as ``policy-pubsub serve`` builds it, with two benchmark probes.

    .venv/bin/python bench/_serve.py --port P --database-url URL [--loop auto|asyncio|uvloop]

- ``GET /_bench/held``: long-polls the router holds right now.
- ``GET /_bench/lag?since=T``: event-loop lag samples (ms) taken after ``time.monotonic()`` T:
  a task sleeps 5 ms over and over and records how late it wakes (``lag_ms``), and how much
  CPU time the loop's thread used from its sleep to its wake-up (``cpu_ms``: the length of
  what ran in between as the processor saw it, which other processes do not stretch).
- ``GET /_bench/stalls?since=T``: with ``--stalls``, where the event loop was while it was
  stalled after T: a thread looks every millisecond, and while the loop's thread has used
  more than ``STALL`` of CPU time since the lag task last woke it samples that thread's stack
  (when the GIL lets it: every few ms). Answers
  ``{"samples": N, "stacks": [[count, [frame, ...]], ...]}``, innermost frame last.

``--loop auto`` picks uvloop when installed, as uvicorn's own ``run`` does.

``--tracemalloc FRAMES`` traces the server's allocations (``tracemalloc``, FRAMES deep) and
serves two more probes, for finding what grows over a soak:

- ``POST /_bench/memory``: note the traced allocations and the live objects by type now, and
  forget any earlier note.
- ``GET /_bench/memory?top=N``: what grew since that note: the N tracebacks whose traced size
  grew most (``{"kb", "count", "frames"}``, innermost frame last), the traced total then and
  now, and the N object types whose live count grew most (``gc.get_objects``, which does not
  list the objects frozen at start-up, ``gc.freeze``: a type whose start-up objects are
  replaced over the run, e.g. the subscriptions' ``Selector`` under churn, counts up by as
  many though its memory does not grow).

``--profile FILE`` (or ``POLICY_PUBSUB_BENCH_PROFILE=FILE`` in its environment, for benchmarks
that start servers through another script) runs the server under cProfile, timed by CPU time
(``time.process_time``: time the machine gave to other processes is not charged to what was
running), and when it stops writes the profile to FILE, and to FILE.count the number of SQL
statements it executed (SQLAlchemy's, not COPY), of rows sent by executemany, and of
transactions it committed.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import signal
import sys
import threading
import time
import tracemalloc
from collections import Counter, deque
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policy_pubsub import logs
from policy_pubsub.api.state import app_state
from policy_pubsub.config import Settings
from policy_pubsub.server import Server, build_server

TICK = 0.005
STALL = 0.010  # CPU time the loop's thread ran without the lag task waking: stalled
# The probes' own samples are kept for a bounded window, so that a long run (bench/soak.py)
# measures the server's memory, not theirs: 200 lag samples a second kept for ever are
# 1.7 MB a minute.
LAG_SAMPLES = 24_000  # two minutes of ticks
STALL_SAMPLES = 100_000
_lag: deque[tuple[float, float, float]] = deque(maxlen=LAG_SAMPLES)
_beat = [time.monotonic(), 0.0]  # when the lag task last woke, and the loop's CPU time then
_stalls: deque[tuple[float, tuple[str, ...]]] = deque(maxlen=STALL_SAMPLES)


async def _monitor() -> None:
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        cpu = time.thread_time()
        await asyncio.sleep(TICK)
        _beat[0], _beat[1] = time.monotonic(), time.thread_time()
        _lag.append((_beat[0], (loop.time() - before - TICK) * 1000, (_beat[1] - cpu) * 1000))


def _sample_stalls(main: int) -> None:
    """While the loop is stalled, record the main thread's stack (innermost last)."""
    clock = time.pthread_getcpuclockid(main)
    while True:
        time.sleep(0.001)
        now = time.monotonic()
        if time.clock_gettime(clock) - _beat[1] < STALL:
            continue
        frame = sys._current_frames().get(main)
        stack = []
        while frame is not None:
            code = frame.f_code
            stack.append(f"{Path(code.co_filename).name}:{code.co_name}:{frame.f_lineno}")
            frame = frame.f_back
        _stalls.append((now, tuple(reversed(stack))))


async def stalls(request: Request) -> JSONResponse:
    since = float(request.query_params.get("since", "0"))
    # list() copies in one step under the GIL: the sampling thread appends meanwhile.
    taken = [stack for at, stack in list(_stalls) if at >= since]
    counted = Counter(taken).most_common()
    return JSONResponse(
        {"samples": len(taken), "stacks": [[count, list(stack)] for stack, count in counted]}
    )


async def held(request: Request) -> JSONResponse:
    running = app_state(request).running
    held = running.router.held_reads if running is not None else -1
    return JSONResponse({"held": held})


async def lag(request: Request) -> JSONResponse:
    since = float(request.query_params.get("since", "0"))
    taken = [(value, cpu) for at, value, cpu in _lag if at >= since]
    return JSONResponse(
        {"lag_ms": [value for value, _ in taken], "cpu_ms": [cpu for _, cpu in taken]}
    )


_noted: dict[str, Any] = {}


def _types() -> Counter[str]:
    return Counter(type(obj).__qualname__ for obj in gc.get_objects())


async def note_memory(request: Request) -> JSONResponse:
    gc.collect()
    _noted["types"] = _types()  # before the snapshot, whose traces are objects too
    _noted["snapshot"] = tracemalloc.take_snapshot()
    return JSONResponse({"traced_mb": tracemalloc.get_traced_memory()[0] / 1e6})


async def memory(request: Request) -> JSONResponse:
    if "snapshot" not in _noted:
        return JSONResponse({"detail": "POST /_bench/memory first"}, status_code=409)
    top = int(request.query_params.get("top", "15"))
    gc.collect()
    types = _types()
    types.subtract(_noted["types"])
    now = tracemalloc.take_snapshot()
    before: tracemalloc.Snapshot = _noted["snapshot"]
    grown = now.compare_to(before, "traceback")
    return JSONResponse(
        {
            "traced_mb_then": sum(s.size for s in before.statistics("filename")) / 1e6,
            "traced_mb_now": sum(s.size for s in now.statistics("filename")) / 1e6,
            "grown": [
                {
                    "kb": round(diff.size_diff / 1024, 1),
                    "count": diff.count_diff,
                    "frames": [f"{frame.filename}:{frame.lineno}" for frame in diff.traceback],
                }
                for diff in grown[:top]
            ],
            "types": types.most_common(top),
        }
    )


class BenchServer(Server):
    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        self._monitor = asyncio.create_task(_monitor())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--loop", default="auto")
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--unguarded",
        action="store_true",
        help="serve on uvicorn's HTTP protocol itself, without the slow-client deadlines",
    )
    parser.add_argument("--metrics-lag-refresh", type=float, default=10.0)
    parser.add_argument(
        "--stalls", action="store_true", help="sample the stack while the loop stalls"
    )
    parser.add_argument("--profile", type=Path, help="cProfile (CPU time) of the run, to FILE")
    parser.add_argument(
        "--tracemalloc",
        type=int,
        metavar="FRAMES",
        help="trace allocations FRAMES deep; serve /_bench/memory",
    )
    parser.add_argument("--retention", type=float, help="retention_seconds")
    parser.add_argument("--maintenance-interval", type=float, help="maintenance_interval_seconds")
    parser.add_argument(
        "--per-topic-lag",
        action="store_true",
        help="read consumer lag per topic (Router.stats each), as scrapes did before Router.lags",
    )
    args = parser.parse_args()
    if args.tracemalloc:
        tracemalloc.start(args.tracemalloc)
    if args.per_topic_lag:
        from policy_pubsub.routers.base import Router
        from policy_pubsub.routers.embedded import EmbeddedRouter

        EmbeddedRouter.lags = Router.lags  # type: ignore[method-assign]
    settings = Settings(
        port=args.port,
        database_url=args.database_url,
        log_level=args.log_level,
        # Components drain their starting snapshot with timeout=0 polls: no 429 for those.
        max_empty_polls_per_minute=0,
        metrics_lag_refresh_seconds=args.metrics_lag_refresh,
        **({"retention_seconds": args.retention} if args.retention else {}),
        **(
            {"maintenance_interval_seconds": args.maintenance_interval}
            if args.maintenance_interval
            else {}
        ),
    )
    logs.configure(settings.log_level, settings.log_format)
    server = build_server(settings, access_log=False, loop=args.loop)
    server.__class__ = BenchServer
    if args.unguarded:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol

        server.config.http = AutoHTTPProtocol  # read when the server loads its config
    server.app.router.routes.extend(
        [
            Route("/_bench/held", held),
            Route("/_bench/lag", lag),
            Route("/_bench/stalls", stalls),
            Route("/_bench/memory", note_memory, methods=["POST"]),
            Route("/_bench/memory", memory, methods=["GET"]),
        ]
    )
    if args.stalls:
        main_thread = threading.get_ident()
        threading.Thread(target=_sample_stalls, args=(main_thread,), daemon=True).start()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    profile_to = args.profile or os.environ.get("POLICY_PUBSUB_BENCH_PROFILE")
    if not profile_to:
        server.run()
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    counts = {"statements": 0, "executemany rows": 0, "commits": 0}

    def statement(_conn: Any, _cursor: Any, _sql: str, params: Any, _ctx: Any, many: bool) -> None:
        counts["statements"] += 1
        if many:
            counts["executemany rows"] += len(params)

    def commit(_conn: Any) -> None:
        counts["commits"] += 1

    event.listen(Engine, "before_cursor_execute", statement)
    event.listen(Engine, "commit", commit)
    profiler = cProfile.Profile(time.process_time)
    try:
        profiler.runcall(server.run)
    finally:
        profiler.dump_stats(str(profile_to))
        Path(f"{profile_to}.count").write_text(json.dumps(counts))


if __name__ == "__main__":
    main()
