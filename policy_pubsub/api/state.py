"""The application's state, typed: one ``AppState`` per app, reached with ``app_state``.

``create_app`` makes it with what exists before start-up (the settings, the metrics, the
request limits, the route table); the lifespan adds what it opens (``Running``: the store,
the router, the service, for an external router the outbox relay, the PDP and the PAP's
channel). Endpoints and middleware read it with ``app_state(request)``, tests with
``app_state(live.app)`` (or ``LiveServer.state``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from policy_pubsub.outages import Outages

if TYPE_CHECKING:
    from policy_pubsub.api.limits import Limits
    from policy_pubsub.api.table import RouteTable
    from policy_pubsub.config import Settings
    from policy_pubsub.metrics import Metrics
    from policy_pubsub.onap.channel import PapChannel
    from policy_pubsub.onap.pdp import Pdp
    from policy_pubsub.relay import OutboxRelay
    from policy_pubsub.routers import Router
    from policy_pubsub.service import PolicyService
    from policy_pubsub.store import Store


@dataclass(frozen=True)
class Running:
    """What the lifespan opened; there from start-up until the app stops."""

    store: Store
    router: Router
    service: PolicyService
    relay: OutboxRelay | None  # None when the router keeps its messages in the store
    pdp: Pdp | None = None  # this server as an ONAP PDP (its state answers PDP_STATE_CHANGE)
    pap: PapChannel | None = None  # the PAP's channel, when pap_topic_url is set


@dataclass
class AppState:
    """Everything the endpoints use. ``store``, ``router``, ``service`` and ``relay`` are
    there once the lifespan has started the app (the server answers no request before);
    reading them earlier is a ``RuntimeError``.
    """

    settings: Settings
    metrics: Metrics
    limits: Limits
    routes: RouteTable
    running: Running | None = None
    # The last failure /healthcheck logged for each part, so it logs each change once.
    health_reported: dict[str, str] = field(default_factory=dict)
    # Store and router outages, logged once each rather than once a refused request.
    outages: Outages = field(default_factory=Outages)

    def _running(self) -> Running:
        if self.running is None:
            raise RuntimeError("the application has not started: its lifespan has not run")
        return self.running

    @property
    def store(self) -> Store:
        return self._running().store

    @property
    def router(self) -> Router:
        return self._running().router

    @property
    def service(self) -> PolicyService:
        return self._running().service

    @property
    def relay(self) -> OutboxRelay | None:
        return self._running().relay

    @property
    def pdp(self) -> Pdp:
        """The server as an ONAP PDP (made by the lifespan, with or without a PAP channel)."""
        pdp = self._running().pdp
        if pdp is None:
            raise RuntimeError("the application runs without a PDP")
        return pdp


def attach(app: Starlette, state: AppState) -> None:
    """Make ``state`` the state of ``app`` (once, in ``create_app``)."""
    app.state.policy_pubsub = state


def app_state(source: HTTPConnection | Starlette) -> AppState:
    """The state of the app serving a request (or of an app); ``RuntimeError`` for an app
    that ``create_app`` did not make.
    """
    # Starlette first: ``HTTPConnection`` is an abstract Mapping, slower to test for.
    app = source if isinstance(source, Starlette) else source.app
    try:
        found = app.state.policy_pubsub
    except AttributeError:
        found = None
    if not isinstance(found, AppState):
        raise RuntimeError("not a policy-pubsub application: it has no AppState")
    return found


__all__ = ["AppState", "Running", "app_state", "attach"]
