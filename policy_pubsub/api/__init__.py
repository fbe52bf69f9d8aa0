"""The HTTP server: the app made from the route table (``policy_pubsub.api.routes``), its
middleware and error handling, and the lifespan that opens and closes the store.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect

from policy_pubsub import routers
from policy_pubsub.api import errors
from policy_pubsub.api.access import AccessMiddleware
from policy_pubsub.api.front import FrontRoutes
from policy_pubsub.api.limits import Limits
from policy_pubsub.api.middleware import RequestMiddleware
from policy_pubsub.api.routes import TABLE
from policy_pubsub.api.state import AppState, Running, attach
from policy_pubsub.auth import Authenticator, load_auth_file
from policy_pubsub.background import change_log_pruning
from policy_pubsub.config import Settings
from policy_pubsub.exceptions import PolicyPubSubError
from policy_pubsub.file_upkeep import file_upkeep
from policy_pubsub.metrics import Metrics
from policy_pubsub.onap.channel import build_channel, build_pdp
from policy_pubsub.relay import dead_letter_retention
from policy_pubsub.service import PolicyService, outlet_for
from policy_pubsub.stale import StaleExpiry
from policy_pubsub.store import Store
from policy_pubsub.store.dialects import SessionTimeouts

log = logging.getLogger(__name__)


# What answers an exception an endpoint raises: Starlette's exception middleware, and the same
# handlers for the endpoints answered in front of it (``front.FrontRoutes``); ``Exception``
# is the server-error middleware's, outside every other layer.
EXCEPTION_HANDLERS: dict[Any, Any] = {
    errors.ApiError: errors.handle_api_error,
    ClientDisconnect: errors.handle_client_left,
    PolicyPubSubError: errors.handle_domain_error,
    HTTPException: errors.handle_http_exception,
    Exception: errors.handle_unexpected,
}


def create_app(settings: Settings | None = None) -> Starlette:
    """The ASGI application; the store opens (and migrates) when the lifespan starts."""
    settings = settings or Settings()
    # Read once, here, so that serve refuses to start on a bad file (AuthFileError).
    authenticator = load_auth_file(settings.auth_file) if settings.auth_file else None
    metrics = Metrics(
        lag_topics=settings.metrics_lag_topics,
        lag_refresh_seconds=settings.metrics_lag_refresh_seconds,
    )
    state = AppState(settings, metrics, Limits(settings, metrics), TABLE)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        timeouts = SessionTimeouts(
            idle_transaction=settings.idle_transaction_timeout_seconds,
            leader_lock=settings.leader_lock_timeout_seconds,
        )
        store = Store(settings.database_url, timeouts)
        await store.open()
        router = routers.from_url(settings.router_url, store, settings)
        # Where snapshots go, chosen once: the store's topics, or the outbox and its relay.
        outlet, relay = outlet_for(store, router)
        service = PolicyService(
            store,
            router,
            outlet,
            metrics=metrics,
            commit_delay=settings.commit_delay_ms / 1000,
        )
        expiry = _stale_expiry(settings, service, store, metrics)
        retention = None
        if relay is not None:
            retention = dead_letter_retention(
                store,
                retention_seconds=settings.retention_seconds,
                interval=settings.maintenance_interval_seconds,
            )
        pruning = change_log_pruning(
            store,
            interval=settings.maintenance_interval_seconds,
            keep_seconds=settings.change_log_keep_seconds,
        )
        pdp = build_pdp(settings, service)
        pap = build_channel(settings, pdp, store, router)
        upkeep = file_upkeep(store, settings.maintenance_interval_seconds)
        tuned = False
        try:
            await router.start()
            await service.start()
            if relay is not None:
                relay.start()
            if expiry is not None:
                expiry.start()
            if retention is not None:
                retention.start()
            pruning.start()
            if pap is not None:
                await pap.start()
                log.info(
                    "PDP %s joins PDP group %s on topic %s",
                    pdp.identity.name,
                    pdp.identity.group,
                    pap.topic,
                )
            if upkeep is not None:
                upkeep.start()
            state.running = Running(store, router, service, relay, pdp, pap)
            state.outages.start(store.ping, router.ping)
            _collect_for_serving()
            tuned = True
            log.info(
                "serving with store %s and router %s",
                _safe(settings.database_url),
                _safe(settings.router_url),
            )
            yield
        finally:
            if tuned:
                _collect_as_before()
            # Each part is closed even when one before it fails: the store last, always.
            closing = [state.outages.close, pruning.close, service.close]
            closing += [pap.close] if pap is not None else []
            closing += [expiry.close] if expiry is not None else []
            closing += [retention.close] if retention is not None else []
            closing += [upkeep.close] if upkeep is not None else []
            closing += [relay.close] if relay is not None else []
            for close in (*closing, router.close):
                try:
                    await close()
                except Exception:
                    log.exception("shutting down: closing %s failed", close.__qualname__)
            await store.close()
            log.info("store closed")

    app = Starlette(
        routes=list(TABLE.routes),
        middleware=_middleware(settings, metrics, authenticator),
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    attach(app, state)
    return app


# The collector's thresholds while serving (Python's are 700, 10, 10): a push to 10,000 held
# long-polls made several full collections, each walking every held poll's objects (0.3-0.5 s
# of a stalled event loop, BENCHMARKS.md 2); with these, about one in a run of three pushes.
GC_THRESHOLDS = (50_000, 20, 20)
_serving = 0  # apps of this process between start-up and shut-down
_thresholds_before: tuple[int, int, int] = (700, 10, 10)


def _collect_for_serving() -> None:
    """Tune the cyclic garbage collector for serving, once start-up is done.

    What start-up made (the policies and subscriptions loaded from the store, everything the
    modules built) lives as long as the server: it is frozen out of full collections, which
    would walk all of it each time (with a thousand subscriptions, about 70 ms in the middle
    of a push: BENCHMARKS.md 1); start-up leaves next to no garbage, so none is collected
    first. Collections run less often (``GC_THRESHOLDS``). Undone when the last app of the
    process stops.
    """
    global _serving, _thresholds_before
    if _serving == 0:
        _thresholds_before = gc.get_threshold()
        gc.set_threshold(*GC_THRESHOLDS)
    _serving += 1
    gc.freeze()


def _collect_as_before() -> None:
    global _serving
    _serving -= 1
    if _serving == 0:
        gc.unfreeze()
        gc.set_threshold(*_thresholds_before)


def _middleware(
    settings: Settings, metrics: Metrics, authenticator: Authenticator | None
) -> list[Middleware]:
    """The request middleware; the access rules when there are any to apply (an auth file or
    a webhook secret: without them that layer would only pass every request on); and the
    hot endpoints (the route table's ``front`` ones), answered in front of the router.
    """
    stack = [Middleware(RequestMiddleware, metrics=metrics, table=TABLE)]
    if authenticator is not None or settings.pap_webhook_secret is not None:
        stack.append(
            Middleware(
                AccessMiddleware, settings=settings, authenticator=authenticator, table=TABLE
            )
        )
    stack.append(Middleware(FrontRoutes, table=TABLE, exception_handlers=EXCEPTION_HANDLERS))
    return stack


def _stale_expiry(
    settings: Settings, service: PolicyService, store: Store, metrics: Metrics
) -> StaleExpiry | None:
    """The expiry of stale subscriptions, when ``expire_stale_after_seconds`` is set."""
    after = settings.expire_stale_after_seconds
    if after is None:
        return None
    return StaleExpiry(
        service,
        store,
        after=after,
        interval=settings.stale_check_interval_seconds,
        metrics=metrics,
    )


def _safe(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


__all__ = ["create_app"]
