"""The DMaaP Message Router API of the embedded router: ``/events`` and ``/topics``."""

from __future__ import annotations

import asyncio
import contextlib
import time

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from policy_pubsub import constants
from policy_pubsub.api import validation
from policy_pubsub.api.body import read_json
from policy_pubsub.api.errors import ApiError, json_response
from policy_pubsub.api.limits import Limits, limits
from policy_pubsub.routers import Router
from policy_pubsub.service import rfc3339
from policy_pubsub.store import OutMessage


def _router(app_state: object) -> Router:
    router: Router = app_state.router  # type: ignore[attr-defined]
    return router


async def publish(request: Request) -> Response:
    started = time.perf_counter()
    topic = validation.topic(request.path_params["topic"])
    body = await read_json(request)
    items = body if isinstance(body, list) else [body]
    if not items:
        raise ApiError(400, "The body holds no message; send an object or an array of objects.")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ApiError(400, f"Message {index} is not a JSON object.")
    bodies = [orjson.dumps(item) for item in items]
    for index, encoded in enumerate(bodies):
        limits(request).check_message(index, len(encoded))
    await _router(request.app.state).publish(
        [OutMessage(topic=topic, body=encoded.decode()) for encoded in bodies]
    )
    elapsed = int((time.perf_counter() - started) * 1000)
    return json_response({"count": len(items), "serverTimeMs": elapsed})


class Subscribe:
    """``GET /events/{topic}/{consumer_group}/{consumer_id}``: the long-poll.

    A plain ASGI endpoint, so it can watch for the client leaving while it waits, and mark
    the messages consumed only after the reply carrying them was handed to the server.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["app"].state
        poll_limits: Limits = state.limits
        topic, group, consumer, timeout_ms, limit = _poll_params(scope, poll_limits)
        release = poll_limits.admit_poll(topic, group, consumer)
        gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        watcher = asyncio.create_task(_watch_disconnect(receive, gone))
        try:
            delivery = await _router(state).read(
                topic, group, consumer, timeout=timeout_ms / 1000, limit=limit, gone=gone
            )
            async with delivery:
                if gone.done():
                    return  # the client left: consume nothing, answer no one
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send(
                    {
                        "type": "http.response.body",
                        "body": orjson.dumps(list(delivery.messages)),
                    }
                )
                if not gone.done():
                    await delivery.ack()
                    poll_limits.answered(topic, group, consumer, len(delivery.messages))
        finally:
            release()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


def _poll_params(scope: Scope, poll_limits: Limits) -> tuple[str, str, str, int, int]:
    """Topic, group, consumer, hold time (ms) and limit of a poll; ``ApiError`` 400 if bad.
    The ``Request`` lives only here, not for as long as the poll is held.
    """
    params = scope["path_params"]
    topic = validation.topic(params["topic"])
    group = validation.consumer(params["consumer_group"], "consumer_group")
    consumer = validation.consumer(params["consumer_id"], "consumer_id")
    request = Request(scope)
    timeout_ms = validation.int_param(
        request, "timeout", constants.DEFAULT_POLL_TIMEOUT_MS, 0, 10**9
    )
    limit = validation.int_param(
        request, "limit", constants.DEFAULT_POLL_LIMIT, 1, constants.MAX_POLL_LIMIT
    )
    return topic, group, consumer, poll_limits.poll_timeout_ms(timeout_ms), limit


async def _watch_disconnect(receive: Receive, gone: asyncio.Future[None]) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if not gone.done():
                gone.set_result(None)
            return


async def topics(request: Request) -> Response:
    return json_response({"topics": await _router(request.app.state).topics()})


async def topic_details(request: Request) -> Response:
    topic = validation.topic(request.path_params["topic"])
    stats = await _router(request.app.state).stats(topic)
    return json_response(
        {
            "name": stats.name,
            "messages": stats.messages,
            "last_published_at": rfc3339(stats.last_published_at),
            "consumer_groups": [
                {
                    "name": g.name,
                    "position": g.position,
                    "lag": g.lag,
                    "last_consumed_at": rfc3339(g.last_consumed_at),
                }
                for g in stats.consumer_groups
            ],
        }
    )


routes = [
    Route("/events/{topic}", publish, methods=["POST"]),
    Route("/events/{topic}/{consumer_group}/{consumer_id}", Subscribe(), methods=["GET"]),
    Route("/topics", topics, methods=["GET"]),
    Route("/topics/{topic}", topic_details, methods=["GET"]),
]
