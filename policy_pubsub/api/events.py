"""The DMaaP Message Router API of the embedded router: ``/events`` and ``/topics``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Generator
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from policy_pubsub import constants
from policy_pubsub.api import validation
from policy_pubsub.api.body import read_json
from policy_pubsub.api.errors import ApiError, error_response, from_domain, json_response
from policy_pubsub.api.limits import Limits, limits
from policy_pubsub.api.state import app_state
from policy_pubsub.exceptions import PolicyPubSubError
from policy_pubsub.logs import LONG_POLL, mark_request
from policy_pubsub.routers import OutMessage
from policy_pubsub.timestamps import rfc3339

log = logging.getLogger(__name__)


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
    await app_state(request).router.publish(
        [OutMessage(topic=topic, body=encoded.decode()) for encoded in bodies]
    )
    elapsed = int((time.perf_counter() - started) * 1000)
    return json_response({"count": len(items), "serverTimeMs": elapsed})


class Subscribe:
    """``GET /events/{topic}/{consumer_group}/{consumer_id}``: the long-poll, as a route.

    A plain ASGI endpoint, so it can watch for the client leaving while it waits, and mark
    the messages consumed only after the reply carrying them was handed to the server. The
    app answers it in front of its router (``policy_pubsub.api.front``); the route stays for
    the other methods (405) and for an app assembled without that middleware.

    It answers its own errors: 400 for bad parameters, 429 and 503 from the limits, 404 for
    an unknown topic, 503 when the store or router is down; all in the DMaaP shape.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = scope["path_params"]
        path = (params["topic"], params["consumer_group"], params["consumer_id"])
        mark_request(scope, LONG_POLL)
        state = app_state(scope["app"])
        poll_limits = state.limits
        try:
            topic, group, consumer, timeout_ms, limit = _poll_params(scope, path, poll_limits)
            release = poll_limits.admit_poll(topic, group, consumer)
        except ApiError as error:
            await error_response(state.routes.shape(scope), error)(scope, receive, send)
            return
        gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        watch = DisconnectWatch(receive, gone)
        try:
            try:
                delivery = await state.router.read(
                    topic, group, consumer, timeout=timeout_ms / 1000, limit=limit, gone=gone
                )
            except PolicyPubSubError as exc:
                state.metrics.domain_error(exc)
                state.outages.refused(exc)
                await error_response(state.routes.shape(scope), from_domain(exc))(
                    scope, receive, send
                )
                return
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
                # Checked before anything can suspend: the server marks the response complete in
                # that last ``send``, which ends the watch's ``receive`` a loop turn later.
                if not gone.done():
                    try:
                        await delivery.ack()
                    except PolicyPubSubError as exc:
                        # Answered already: the group gets these messages again at its next read.
                        log.warning("could not mark %s/%s consumed: %s", topic, group, exc)
                        return
                    poll_limits.answered(topic, group, consumer, len(delivery.messages))
        finally:
            watch.close()
            release()


class DisconnectWatch:
    """Completes ``gone`` once ``receive`` gives ``http.disconnect`` (the client left, or the
    answer is complete), until :meth:`close`.

    It steps the ``receive()`` calls itself, from the callbacks of the futures they wait on,
    as a task would step them, rather than in a task of its own: a held long-poll then costs
    no task (its object, its frame, its entry in the loop's set of tasks), and ending the
    watch is a call, not a cancellation to wait for. What a task would do besides (a current
    task, cancelling) ``receive`` does not need: it waits on futures of the running loop,
    nothing else, as uvicorn's does.
    """

    __slots__ = ("_coro", "_gone", "_open", "_receive")

    def __init__(self, receive: Receive, gone: asyncio.Future[None]) -> None:
        self._receive = receive
        self._gone = gone
        self._coro: Generator[Any, None, Message] | None = None
        self._open = True
        self._step()

    def close(self) -> None:
        """Stop watching; the ``receive()`` under way, if any, is closed (so it stops waiting)."""
        self._open = False
        coro, self._coro = self._coro, None
        if coro is not None:
            coro.close()

    def _wakeup(self, future: asyncio.Future[Any]) -> None:
        try:
            future.result()
        except BaseException as exc:  # handed on to the coroutine, as a task does
            self._step(exc)
        else:
            self._step()

    def _step(self, error: BaseException | None = None) -> None:
        while self._open:
            coro = self._coro
            if coro is None:
                coro = self._coro = self._receive().__await__()
            try:
                awaited = coro.send(None) if error is None else coro.throw(error)
            except StopIteration as done:
                self._coro, error = None, None
                if done.value.get("type") == "http.disconnect":
                    self._left()
                    return
                continue  # the request's body (a long-poll has none): receive again
            except (Exception, asyncio.CancelledError):
                log.exception("receiving from the client failed; taking it as gone")
                self._coro = None
                self._left()
                return
            if awaited is None:  # a bare yield (``asyncio.sleep(0)``): step again next turn
                asyncio.get_running_loop().call_soon(self._step)
            elif getattr(awaited, "_asyncio_future_blocking", False):
                awaited._asyncio_future_blocking = False
                awaited.add_done_callback(self._wakeup)
            else:
                error = RuntimeError(f"receive() awaited {awaited!r}, not an asyncio future")
                continue
            return

    def _left(self) -> None:
        self._open = False
        if not self._gone.done():
            self._gone.set_result(None)


def _poll_params(
    scope: Scope, path: tuple[str, str, str], poll_limits: Limits
) -> tuple[str, str, str, int, int]:
    """Topic, group, consumer, hold time (ms) and limit of a poll; ``ApiError`` 400 if bad."""
    topic = validation.topic(path[0])
    group = validation.consumer(path[1], "consumer_group")
    consumer = validation.consumer(path[2], "consumer_id")
    query: bytes = scope.get("query_string", b"")
    params = dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True)) if query else {}
    timeout_ms = _int_param(params, "timeout", constants.DEFAULT_POLL_TIMEOUT_MS, 0, 10**9)
    limit = _int_param(params, "limit", constants.DEFAULT_POLL_LIMIT, 1, constants.MAX_POLL_LIMIT)
    return topic, group, consumer, poll_limits.poll_timeout_ms(timeout_ms), limit


def _int_param(params: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    """As :func:`validation.int_param`, from the parsed query string (a poll builds no
    ``Request``: parsing its two parameters is a good part of its cost).
    """
    value = params.get(name)
    if value is None:
        return default
    if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
        raise ApiError(400, f"{name}: must be an integer from {low} to {high}, not {value[:50]!r}.")
    return int(value)


async def topics(request: Request) -> Response:
    return json_response({"topics": await app_state(request).router.topics()})


async def topic_details(request: Request) -> Response:
    topic = validation.topic(request.path_params["topic"])
    stats = await app_state(request).router.stats(topic)
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
                    "consumers": g.consumers,
                }
                for g in stats.consumer_groups
            ],
        }
    )


__all__ = [
    "DisconnectWatch",
    "Subscribe",
    "publish",
    "topic_details",
    "topics",
]
