"""What the slow-client guard (policy_pubsub/connections.py) costs per request, in process.

    .venv/bin/python bench/guard.py [--requests 5000] [--runs 9]

One uvicorn HTTP protocol object (httptools, as ``serve`` runs it) on a stand-in transport is
fed keep-alive ``GET`` requests one after the other, each answered by a two-byte ASGI app, on
uvloop; once as uvicorn's protocol alone and once under ``guarded`` with the server's default
limits. The runs alternate, and the table gives each one's microseconds per request (minimum
and median over the runs): the difference is the guard's work per request (a phase change on
the request's first bytes, a deadline timer armed and cancelled). No sockets, no server: the
figure is the protocol's own cost, which the propagation benchmark's end-to-end numbers on a
shared machine cannot resolve.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, header, save, table

sys.path.insert(0, str(ROOT))

import uvloop
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from policy_pubsub.config import Settings
from policy_pubsub.connections import ConnectionLimits, guarded

REQUEST = (
    b"GET /events/comp-1/g/c?timeout=120000 HTTP/1.1\r\nhost: 127.0.0.1:8000\r\n"
    b"user-agent: bench\r\naccept: */*\r\n\r\n"
)


class _Transport:
    """Enough of a transport for uvicorn's protocol; counts the writes of answers."""

    def __init__(self) -> None:
        self.writes = 0
        self.written = asyncio.Event()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 40000)}.get(
            name, default
        )

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.written.set()

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        return None

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


async def _per_request(protocol_class: Any, requests: int) -> float:
    config = Config(app=_app, log_config=None, access_log=False, lifespan="off")
    config.load()
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
    transport = _Transport()
    protocol.connection_made(transport)
    started = time.perf_counter()
    for i in range(requests):
        protocol.data_received(REQUEST)
        while transport.writes < 2 * (i + 1):  # the head and the body of the answer
            transport.written.clear()
            await transport.written.wait()
        await asyncio.sleep(0)  # the request's task finishes
    return (time.perf_counter() - started) / requests * 1e6


async def _measure(requests: int, runs: int) -> list[dict[str, Any]]:
    defaults = Settings()
    limits = ConnectionLimits(
        header_seconds=defaults.header_timeout_seconds,
        body_seconds=defaults.body_timeout_seconds,
        max_incomplete=defaults.max_incomplete_requests,
    )
    kinds = {"httptools alone": HttpToolsProtocol, "guarded": guarded(HttpToolsProtocol, limits)}
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(runs):
        for kind, protocol_class in kinds.items():
            times[kind].append(await _per_request(protocol_class, requests))
    return [
        {
            "protocol": kind,
            "min_us": min(values),
            "median_us": statistics.median(values),
            "runs_us": [round(v, 1) for v in values],
        }
        for kind, values in times.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    head = header()
    rows = uvloop.run(_measure(args.requests, args.runs))
    table(rows, ["protocol", "min_us", "median_us"])
    save("guard", head, rows)


if __name__ == "__main__":
    main()
