"""The ceiling: a bare in-memory long-poll and JSON app on the same uvicorn (no store, no
matching, no middleware), speaking the same URLs as policy-pubsub for the benchmark clients.

    .venv/bin/python bench/_bare.py --port P [--loop auto|asyncio|uvloop]

- ``GET /events/{topic}/{group}/{consumer}?timeout=MS``: the topic's messages after the
  group's position, or wait for one (one future per topic, like the embedded router).
- ``POST /push``: append the body to every topic (a push that matches everyone).
- ``POST /decision/v1``: a fixed 10-policy answer, after parsing the request body.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import policy

_messages: dict[str, list[bytes]] = {}
_positions: dict[tuple[str, str], int] = {}
_signals: dict[str, asyncio.Future[None]] = {}
_held = 0
ANSWER = {"policies": {f"bench.p{i}": policy(f"bench.p{i}", "bench.type", i) for i in range(10)}}


async def events(request: Request) -> Response:
    global _held
    topic = request.path_params["topic"]
    key = (topic, request.path_params["group"])
    timeout = int(request.query_params.get("timeout", "15000")) / 1000
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        queue = _messages.setdefault(topic, [])
        position = _positions.get(key, 0)
        if len(queue) > position:
            _positions[key] = len(queue)
            return Response(
                b"[" + b",".join(queue[position:]) + b"]", media_type="application/json"
            )
        remaining = deadline - loop.time()
        if remaining <= 0:
            return Response(b"[]", media_type="application/json")
        signal = _signals.get(topic)
        if signal is None or signal.done():
            signal = _signals[topic] = loop.create_future()
        _held += 1
        try:
            await asyncio.wait([signal], timeout=remaining)
        finally:
            _held -= 1


async def push(request: Request) -> Response:
    body = await request.body()
    for topic, queue in _messages.items():
        queue.append(body)
        signal = _signals.pop(topic, None)
        if signal is not None and not signal.done():
            signal.set_result(None)
    return JSONResponse({"notified": len(_messages)})


async def decision(request: Request) -> Response:
    json.loads(await request.body())
    return JSONResponse(ANSWER)


async def held(request: Request) -> Response:
    return JSONResponse({"held": _held})


app = Starlette(
    routes=[
        Route("/events/{topic}/{group}/{consumer}", events),
        Route("/push", push, methods=["POST"]),
        Route("/decision/v1", decision, methods=["POST"]),
        Route("/_bench/held", held),
        Route("/healthcheck", held),
    ]
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", default="auto")
    args = parser.parse_args()
    uvicorn.run(
        app, host="127.0.0.1", port=args.port, loop=args.loop, access_log=False, log_level="warning"
    )


if __name__ == "__main__":
    main()
