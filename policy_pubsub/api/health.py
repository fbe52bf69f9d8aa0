"""``GET /healthcheck``: is the store reachable, is the router reachable."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from policy_pubsub import constants
from policy_pubsub.api.errors import json_response

CHECK_TIMEOUT_SECONDS = 2.0


async def _check(probe: Callable[[], Awaitable[None]]) -> str | None:
    """None when the probe succeeds in time, else why not."""
    try:
        await asyncio.wait_for(probe(), CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT_SECONDS:g} s"
    except Exception as exc:
        return str(exc) or type(exc).__name__
    return None


async def healthcheck(request: Request) -> Response:
    state = request.app.state
    problems = {
        "store": await _check(state.store.ping),
        "router": await _check(state.router.ping),
    }
    healthy = not any(problems.values())
    code = 200 if healthy else 503
    failing = [f"{part}: {why}" for part, why in problems.items() if why]
    return json_response(
        {
            "name": constants.SERVICE_NAME,
            "healthy": healthy,
            "code": code,
            "message": "alive" if healthy else "; ".join(failing),
            "details": {part: why or "ok" for part, why in problems.items()},
        },
        code,
    )


routes = [Route("/healthcheck", healthcheck, methods=["GET"])]
