"""``GET /healthcheck``: is the store reachable, is the router reachable, is the relay moving,
has every subscriber with a dead letter had something delivered since; with a router that
keeps a queue per subscription (RabbitMQ), figures over those queues; and ``GET /metrics``, the
metrics in the Prometheus text format.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from policy_pubsub import constants
from policy_pubsub.api.errors import json_response
from policy_pubsub.api.state import app_state
from policy_pubsub.exceptions import RouterUnavailable, StoreUnavailable
from policy_pubsub.relay import OutboxRelay
from policy_pubsub.routers import Router
from policy_pubsub.store import Store
from policy_pubsub.timestamps import rfc3339

log = logging.getLogger(__name__)

CHECK_TIMEOUT_SECONDS = 2.0
# Attempts to publish that fail in a row, with the router answering, before /healthcheck says
# the relay is failing (with its backoff, a few seconds).
RELAY_FAILURES = 3
RELAY_ERROR = "the last attempt to publish failed; the server log says why"


# What the anonymous answer says of a failed probe: the driver's own text (an SQL statement,
# a host name) goes to the log only.
_FAILED: dict[type[Exception], str] = {
    StoreUnavailable: "unavailable",
    RouterUnavailable: "unreachable",
}


async def _check(
    part: str, probe: Callable[[], Awaitable[None]], reported: dict[str, str]
) -> str | None:
    """None when the probe succeeds in time, else why not, in words that give nothing away.
    The full reason is logged once each time it changes (``reported`` remembers it), not at
    every probe.
    """
    try:
        await asyncio.wait_for(probe(), CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        why = detail = f"no answer within {CHECK_TIMEOUT_SECONDS:g} s"
    except Exception as exc:
        why = _FAILED.get(type(exc), "failed") + "; the server log says why"
        detail = str(exc) or type(exc).__name__
    else:
        if reported.pop(part, None) is not None:
            log.info("healthcheck: the %s answers again", part)
        return None
    if reported.get(part) != detail:
        reported[part] = detail
        log.warning("healthcheck: the %s: %s", part, detail)
    return why


async def healthcheck(request: Request) -> Response:
    state = app_state(request)
    problems: dict[str, str | None] = {
        "store": await _check("store", state.store.ping, state.health_reported),
        "router": await _check("router", state.router.ping, state.health_reported),
    }
    outbox: dict[str, Any] | None = None
    relay = state.relay
    if relay is not None and not problems["store"]:
        outbox, problems["relay"] = await relay_check(
            relay, state.settings.relay_stuck_seconds, router_up=not problems["router"]
        )
    if relay is not None and not problems["store"]:
        problems["dead_letters"] = await dead_letters_check(state.store)
    queues = None
    if not problems["store"] and not problems["router"]:
        queues = await queue_figures(state.router)
    healthy = not any(problems.values())
    code = 200 if healthy else 503
    failing = [f"{part}: {why}" for part, why in problems.items() if why]
    details: dict[str, Any] = {part: why or "ok" for part, why in problems.items()}
    if outbox is not None:
        details["outbox"] = outbox
    if queues is not None:
        details["queues"] = queues
    pap = state.running.pap if state.running is not None else None
    if pap is not None:
        details["pdp"] = pap.report()
    return json_response(
        {
            "name": constants.SERVICE_NAME,
            "healthy": healthy,
            "code": code,
            "message": "alive" if healthy else "; ".join(failing),
            "details": details,
        },
        code,
    )


async def relay_check(
    relay: OutboxRelay, stuck_seconds: float, *, router_up: bool
) -> tuple[dict[str, Any] | None, str | None]:
    """The outbox's figures, and why the relay is unhealthy: stuck when the oldest outbox
    message waited past ``stuck_seconds`` although the router answers (with the router down,
    the router's check already says why).
    """
    try:
        status = await asyncio.wait_for(relay.status(), CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        return None, f"the outbox did not answer within {CHECK_TIMEOUT_SECONDS:g} s"
    except StoreUnavailable as exc:
        log.warning("healthcheck: the outbox cannot be read: %s", exc)
        return None, "the outbox cannot be read; the server log says why"
    outbox = {
        "depth": status.depth,
        "oldest_age_seconds": status.oldest_age_seconds,
        "relay_leader": status.leader,
        # Whether the last attempt failed; the router's own words (hosts, subjects) go to
        # the log only, as for the store and router checks.
        "relay_error": RELAY_ERROR if status.last_error else None,
        "relay_failures": status.failures,
    }
    age = status.oldest_age_seconds
    if router_up and age is not None and age > stuck_seconds:
        why = (
            f"stuck: the oldest of {status.depth} outbox messages has waited {age:.1f} s, "
            f"more than {stuck_seconds:g} s, while the router answers"
        )
        if status.last_error:
            why += "; the server log says why"
        return outbox, why
    if router_up and status.failures >= RELAY_FAILURES:
        # The router answers, yet what the relay hands it keeps failing: a message it will
        # not take, or a fault of its own. Said at once, not after relay_stuck_seconds.
        return outbox, (
            f"failing: the last {status.failures} attempts to publish failed while the router "
            "answers; the server log says why"
        )
    return outbox, None


async def queue_figures(router: Router) -> dict[str, Any] | None:
    """The router's figures over the subscriptions' queues (informative: health does not
    depend on them); None for a router without such queues, or when they could not be read in
    time (the read goes on, and a later check answers from it).
    """
    try:
        summary = await asyncio.wait_for(router.queue_summary(), CHECK_TIMEOUT_SECONDS)
    except (TimeoutError, RouterUnavailable, StoreUnavailable):
        return None
    if summary is None:
        return None
    return {
        "queues": summary.queues,
        "messages": summary.messages,
        "consumers": summary.consumers,
        "without_consumers": summary.without_consumers,
        "read_at": rfc3339(summary.read_at),
        "complete": summary.complete,
    }


async def dead_letters_check(store: Store) -> str | None:
    """Why delivery is unhealthy: a dead letter newer than anything delivered to its
    subscriber since (the subscriber misses a snapshot until one reaches it); None when
    every dead letter was superseded or its subscription is gone. Says how many subscribers,
    not which nor the router's reason: anyone may ask, and ``GET /dead-letters`` (admin) and
    the log (one ERROR per dead letter) tell the rest.
    """
    try:
        waiting = await asyncio.wait_for(store.dead_letters.undelivered(), CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        return f"the dead letters did not answer within {CHECK_TIMEOUT_SECONDS:g} s"
    except StoreUnavailable as exc:
        log.warning("healthcheck: the dead letters cannot be read: %s", exc)
        return "the dead letters cannot be read; the server log says why"
    if not waiting:
        return None
    subscribers = {letter.subscriber_id for letter in waiting if letter.subscriber_id}
    who = "1 subscriber has" if len(subscribers) == 1 else f"{len(subscribers)} subscribers have"
    return (
        f"{who} had nothing delivered since the router refused a snapshot for good; "
        "`policy-pubsub dead-letters` lists them: fix the cause, then retry"
    )


async def metrics(request: Request) -> Response:
    """Every metric, the gauges read from the store and the router now."""
    state = app_state(request)
    await state.metrics.refresh(state)
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


__all__ = [
    "CHECK_TIMEOUT_SECONDS",
    "RELAY_FAILURES",
    "dead_letters_check",
    "healthcheck",
    "metrics",
    "queue_figures",
    "relay_check",
]
