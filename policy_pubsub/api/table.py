"""The route table: each endpoint declared once, and what is made from the declarations.

An ``Endpoint`` says everything about one method on one path: its handler, who may call it
(``Access``), its OpenAPI operation (``Operation``) and the shape of its errors. A
``RouteTable`` of endpoints gives the app its Starlette routes (one per path, so a 405 lists
every method of the path), tells the access middleware which endpoint a request reaches (by
matching the same routes the router matches), and gives an error answer its shape. The
OpenAPI document is built from the same endpoints (``policy_pubsub.api.openapi``).

Routes match a path to its very end: a path with a newline at the end (``%0A``) is not
the path without it, although a regular expression's ``$`` would say so.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Scope

from policy_pubsub.api.errors import ErrorShape
from policy_pubsub.auth import COMPONENT, PAP
from policy_pubsub.config import Settings

Handler = Callable[[Request], Awaitable[Response]]
Schema = dict[str, Any]
JSON = "application/json"


class Openness(enum.Enum):
    """Whether an endpoint answers without credentials (when the server has an auth file)."""

    NEVER = "never"
    ALWAYS = "always"
    IF_METRICS_PUBLIC = "if metrics_public"

    def applies(self, settings: Settings) -> bool:
        """Whether anyone may call the endpoint with these settings."""
        if self is Openness.IF_METRICS_PUBLIC:
            return settings.metrics_public
        return self is Openness.ALWAYS


@dataclass(frozen=True)
class Access:
    """Who may call an endpoint: ``admin`` always; the ``roles``; anyone when ``open``."""

    family: str  # a name for the rule, in logs and tests
    roles: frozenset[str]  # the roles that may call it besides admin; empty: admin only
    open: Openness = Openness.NEVER
    signed: bool = False  # needs the PAP webhook signature when a secret is configured
    topic: str | None = None  # the path parameter the user's topic patterns must allow


# A path that no endpoint serves (the router answers 404): any known user.
UNKNOWN = Access("other", frozenset({PAP, COMPONENT}))


@dataclass(frozen=True)
class Operation:
    """An endpoint's OpenAPI operation: what it reads and every status it answers."""

    operation_id: str
    tag: str
    summary: str
    ok: dict[int, tuple[str, Schema | None]]  # status -> (description, body schema)
    errors: tuple[int, ...] = ()
    body: Schema | None = None
    body_types: tuple[str, ...] = (JSON,)
    query: tuple[str, ...] = ()  # names of openapi.PARAMETERS
    description: str = ""
    missing: str = "The resource is unknown."  # the 404 description
    ok_type: str = JSON  # the media type of the 2xx answers
    # status -> (description, body schema) of the errors answered in another shape than the
    # route's error shape (a PDP_UPDATE refused with a PDP_STATUS).
    error_bodies: dict[int, tuple[str, Schema]] = field(default_factory=dict)


@dataclass(frozen=True)
class Endpoint:
    """One method on one path. ``handler`` takes a request and gives a response; ``asgi``
    instead answers the request as a raw ASGI app (the long-poll). Exactly one is given.
    ``front``: answered in front of Starlette's router (``policy_pubsub.api.front``), for the
    hot endpoints; the router's route answers it in an app without that middleware.
    """

    method: str
    path: str
    access: Access
    operation: Operation
    handler: Handler | None = None
    asgi: ASGIApp | None = None
    shape: ErrorShape = ErrorShape.ONAP
    front: bool = False


class TableRoute(Route):
    """A Starlette route of one path that matches the path to its end (``\\Z``, not ``$``,
    which also matches before a final newline) and knows its endpoints.
    """

    def __init__(self, path: str, endpoints: list[Endpoint]) -> None:
        self.endpoints = {endpoint.method: endpoint for endpoint in endpoints}
        first = endpoints[0]
        if first.asgi is not None:
            if len(endpoints) > 1:
                raise ValueError(f"{path}: a raw ASGI endpoint must be the path's only method")
            super().__init__(path, first.asgi, methods=[first.method])
            # Starlette answers HEAD with GET's endpoint; a raw endpoint (the long-poll) would
            # act on it (consume the group's messages) and send no body: HEAD is a 405.
            if self.methods is not None:
                self.methods.discard("HEAD")
        else:
            super().__init__(path, _dispatch(self.endpoints), methods=list(self.endpoints))
        pattern = self.path_regex.pattern
        if not pattern.endswith("$"):
            raise ValueError(f"{path}: unexpected route pattern {pattern!r}")
        self.path_regex = re.compile(pattern[:-1] + r"\Z")
        self.access = first.access
        self.shape = first.shape
        # The methods answered in front of the router (``policy_pubsub.api.front``).
        self.front_methods = frozenset(m for m, e in self.endpoints.items() if e.front)


def _dispatch(endpoints: dict[str, Endpoint]) -> Handler:
    """One Starlette endpoint for a path that hands each method to its handler (HEAD to
    GET's).
    """
    handlers: dict[str, Handler] = {}
    for method, declared in endpoints.items():
        if declared.handler is None:
            raise ValueError(f"{method} {declared.path}: no handler")
        handlers[method] = declared.handler

    async def dispatch(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    dispatch.__name__ = "_".join(h.__name__ for h in handlers.values())
    return dispatch


class RouteTable:
    """The endpoints, checked (one declaration per method and path; the endpoints of one
    path share their access rule and error shape) and made into routes.
    """

    def __init__(self, endpoints: Iterable[Endpoint]) -> None:
        self.endpoints = tuple(endpoints)
        by_path: dict[str, list[Endpoint]] = {}
        for endpoint in self.endpoints:
            if (endpoint.handler is None) == (endpoint.asgi is None):
                raise ValueError(f"{endpoint.method} {endpoint.path}: give handler or asgi")
            same = by_path.setdefault(endpoint.path, [])
            if any(other.method == endpoint.method for other in same):
                raise ValueError(f"{endpoint.method} {endpoint.path} is declared twice")
            if same and (same[0].access, same[0].shape) != (endpoint.access, endpoint.shape):
                raise ValueError(f"{endpoint.path}: its methods differ in access or error shape")
            same.append(endpoint)
        self.routes = [TableRoute(path, same) for path, same in by_path.items()]
        # An unknown path answers in the shape of the endpoints under its first segment.
        self._dmaap_prefixes = tuple(
            sorted({_first_segment(e.path) for e in self.endpoints if e.shape is ErrorShape.DMAAP})
        )
        for endpoint in self.endpoints:
            dmaap = endpoint.path.startswith(self._dmaap_prefixes)
            if dmaap != (endpoint.shape is ErrorShape.DMAAP):
                raise ValueError(f"{endpoint.path}: its error shape differs from its neighbours'")

    def route(self, path: str) -> TableRoute:
        """The route of ``path`` (a declared path, e.g. ``/topics/{topic}``)."""
        for route in self.routes:
            if route.path == path:
                return route
        raise KeyError(path)

    def match(self, scope: Scope) -> tuple[TableRoute, dict[str, Any]] | None:
        """The route the router hands this request to, whatever its method (a 405 is that
        route's answer), and the path parameters; else the route it redirects to (a path
        with or without a final ``/``, as Starlette's ``redirect_slashes``); else None.
        """
        found = self._match(scope)
        if found is not None:
            return found
        path: str = scope["path"]
        if route_path(scope) == "/":
            return None
        other = path.rstrip("/") if path.endswith("/") else path + "/"
        return self._match({**scope, "path": other})

    def _match(self, scope: Scope) -> tuple[TableRoute, dict[str, Any]] | None:
        for route in self.routes:
            match, child = route.matches(scope)
            if match is not Match.NONE:
                params: dict[str, Any] = child["path_params"]
                return route, params
        return None

    def access(self, scope: Scope) -> tuple[Access, dict[str, Any]]:
        """The access rule of the endpoint a request reaches (``UNKNOWN`` if none) and its
        path parameters.
        """
        found = self.match(scope)
        if found is None:
            return UNKNOWN, {}
        route, params = found
        return route.access, params

    def shape(self, scope: Scope) -> ErrorShape:
        """The error shape of a request: that of its path's endpoints, or for an unknown
        path that of the endpoints whose first segment it starts with (ONAP when none do).
        """
        if route_path(scope).startswith(self._dmaap_prefixes):
            return ErrorShape.DMAAP
        return ErrorShape.ONAP


def _first_segment(path: str) -> str:
    return "/" + path.split("/")[1]


def route_path(scope: Scope) -> str:
    """The path the router matches: without the ``root_path`` the app is mounted at."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :] or "/"
    return path


__all__ = [
    "JSON",
    "UNKNOWN",
    "Access",
    "Endpoint",
    "Handler",
    "Openness",
    "Operation",
    "RouteTable",
    "Schema",
    "TableRoute",
    "route_path",
]
