"""The HTTP server: routes, error handling, and the lifespan that opens and closes the store."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from policy_pubsub import routers
from policy_pubsub.api import decision, errors, events, health, openapi, pap, subscriptions
from policy_pubsub.api.middleware import RequestIdMiddleware
from policy_pubsub.config import Settings
from policy_pubsub.exceptions import PolicyPubSubError
from policy_pubsub.service import PolicyService
from policy_pubsub.store import Store

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Starlette:
    """The ASGI application; the store opens (and migrates) when the lifespan starts."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = Store(settings.database_url)
        await store.open()
        router = routers.from_url(settings.router_url, store, settings)
        service = PolicyService(store, router)
        try:
            await router.start()
            await service.start()
            app.state.store, app.state.router, app.state.service = store, router, service
            log.info(
                "serving with store %s and router %s",
                _safe(settings.database_url),
                settings.router_url,
            )
            yield
        finally:
            await router.close()
            await store.close()
            log.info("store closed")

    app = Starlette(
        routes=[
            *decision.routes,
            *subscriptions.routes,
            *pap.routes,
            *events.routes,
            *health.routes,
            *openapi.routes,
        ],
        middleware=[Middleware(RequestIdMiddleware)],
        exception_handlers={
            errors.ApiError: errors.handle_api_error,
            PolicyPubSubError: errors.handle_domain_error,
            HTTPException: errors.handle_http_exception,
            Exception: errors.handle_unexpected,
        },
        lifespan=lifespan,
    )
    app.state.settings = settings
    return app


def _safe(url: str) -> str:
    """The URL without its password, for logs."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


__all__ = ["create_app"]
