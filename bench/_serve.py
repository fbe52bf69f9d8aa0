"""The policy-pubsub server as ``policy-pubsub serve`` builds it, with two benchmark probes.

    .venv/bin/python bench/_serve.py --port P --database-url URL [--loop auto|asyncio|uvloop]

- ``GET /_bench/held``: long-polls the router holds right now.
- ``GET /_bench/lag?since=T``: event-loop lag samples (ms) taken after ``time.monotonic()`` T:
  a task sleeps 5 ms over and over and records how late it wakes.

``--loop auto`` picks uvloop when installed, as uvicorn's own ``run`` does.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policy_pubsub import logs
from policy_pubsub.config import Settings
from policy_pubsub.server import Server, build_server

TICK = 0.005
_lag: list[tuple[float, float]] = []


async def _monitor() -> None:
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(TICK)
        _lag.append((time.monotonic(), (loop.time() - before - TICK) * 1000))
        if len(_lag) > 200_000:
            del _lag[:100_000]


async def held(request: Request) -> JSONResponse:
    router = getattr(request.app.state, "router", None)
    return JSONResponse({"held": -1 if router is None else router.held_reads})


async def lag(request: Request) -> JSONResponse:
    since = float(request.query_params.get("since", "0"))
    return JSONResponse({"lag_ms": [value for at, value in _lag if at >= since]})


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
    args = parser.parse_args()
    settings = Settings(
        port=args.port,
        database_url=args.database_url,
        log_level=args.log_level,
        # Components drain their starting snapshot with timeout=0 polls: no 429 for those.
        max_empty_polls_per_minute=0,
    )
    logs.configure(settings.log_level, settings.log_format)
    server = build_server(settings, access_log=False, loop=args.loop)
    server.__class__ = BenchServer
    server.app.router.routes.extend([Route("/_bench/held", held), Route("/_bench/lag", lag)])
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    server.run()


if __name__ == "__main__":
    main()
