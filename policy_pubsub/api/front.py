"""The hot endpoints, answered in front of Starlette's exception middleware and router.

Every request passes the request middleware (and the access middleware, when there is one)
and then this one, the innermost. The endpoints of the route table marked ``front`` (the
long-poll, the decision API, subscribe and unsubscribe, the PAP pushes) are answered here,
as the router would answer them, without the layers a request otherwise crosses between this
middleware and its handler: the exception middleware (a ``Request`` and a wrapped ``send``),
the router's loop over its routes, the route's own ``Request`` and exception wrapper, and the
dispatch by method. Those layers stay in place for every other request, for the methods a
front endpoint does not serve (405), and for an app assembled without this middleware.

What the exception middleware would make of an exception raised by a handler, this
middleware makes of it, with the same handlers (``exception_handlers``, as given to the
app): the first handler found along the exception's classes answers; an exception no
handler takes (``Exception`` and 500 are the server-error middleware's, outside) goes on up.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from policy_pubsub.api.table import Endpoint, Handler, RouteTable, TableRoute, route_path

ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]
# Answers one request, its path parameters in the scope (an ASGI app).
Answer = ASGIApp


class FrontRoutes:
    """The innermost middleware: answers the requests that reach a ``front`` endpoint of
    ``table`` (by path, as the router matches it, and method); hands every other request on.
    """

    def __init__(
        self,
        app: ASGIApp,
        table: RouteTable,
        exception_handlers: Mapping[Any, ExceptionHandler],
    ) -> None:
        self.app = app
        self.handlers = Handlers(exception_handlers)
        # The routes in the router's order, up to the last one with a front endpoint: a path
        # answered here is one no route before it matches, as in the router.
        fronts = [index for index, route in enumerate(table.routes) if route.front_methods]
        ordered = table.routes[: fronts[-1] + 1] if fronts else []
        # Each front route (by its path, one route's): its methods, each with what answers it.
        self._answers: dict[str, dict[str, Answer]] = {
            route.path: {
                method: self._answer(route, method, route.endpoints[method])
                for method in route.front_methods
            }
            for route in ordered
            if route.front_methods
        }
        # A path without parameters is looked up; it must be one no route before it matches.
        self._exact: dict[str, TableRoute] = {}
        self._patterns: list[TableRoute] = []
        for index, route in enumerate(ordered):
            if route.param_convertors or any(
                other.path_regex.match(route.path) for other in ordered[:index]
            ):
                self._patterns.append(route)
            else:
                self._exact[route.path] = route
        self._patterns_needed = any(route.path in self._answers for route in self._patterns)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            found = self.match(route_path(scope))
            if found is not None:
                route, params = found
                answers = self._answers.get(route.path)
                answer = answers.get(scope["method"]) if answers is not None else None
                if answer is not None:
                    scope["path_params"] = params
                    await answer(scope, receive, send)
                    return
        await self.app(scope, receive, send)

    def match(self, path: str) -> tuple[TableRoute, dict[str, Any]] | None:
        """The route the router would hand a request for ``path`` to, and its path
        parameters; None when none of the routes up to the last front one matches.
        """
        route = self._exact.get(path)
        if route is not None:
            return route, {}
        if not self._patterns_needed:
            return None
        for route in self._patterns:
            found = route.path_regex.match(path)
            if found is not None:
                params = found.groupdict()
                for key, value in params.items():
                    params[key] = route.param_convertors[key].convert(value)
                return route, params
        return None

    def _answer(self, route: TableRoute, method: str, endpoint: Endpoint) -> Answer:
        if endpoint.asgi is not None:
            # A raw ASGI endpoint (the long-poll) answers its own errors; called as it is, it
            # adds no frame to what a held long-poll keeps.
            return endpoint.asgi
        handler = endpoint.handler
        if handler is None or not inspect.iscoroutinefunction(handler):
            raise ValueError(f"{method} {route.path}: a front handler must be a coroutine function")
        return _handled(handler, self.handlers)


def _handled(handler: Handler, handlers: Handlers) -> Answer:
    """A handler of a ``Request``, its exceptions answered as the exception middleware
    answers them (Starlette's ``wrap_app_handling_exceptions``).
    """

    async def answer(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            response = await handler(request)
        except Exception as exc:
            response = await handlers.refusal(request, exc)
        await handlers.send(response, scope, receive, send)

    return answer


class Handlers:
    """The app's exception handlers, as the exception middleware holds them."""

    def __init__(self, exception_handlers: Mapping[Any, ExceptionHandler]) -> None:
        self.by_status: dict[int, ExceptionHandler] = {}
        self.by_class: dict[type[BaseException], ExceptionHandler] = {}
        for key, handler in exception_handlers.items():
            if key in (500, Exception):
                continue  # the server-error middleware's, outside every other layer
            if not inspect.iscoroutinefunction(handler):
                raise ValueError(f"the handler of {key!r} must be a coroutine function")
            if isinstance(key, int):
                self.by_status[key] = handler
            else:
                self.by_class[key] = handler

    def find(self, exc: Exception) -> ExceptionHandler | None:
        """The handler of ``exc``: by its status for an ``HTTPException``, else the first
        along its classes; None when no handler takes it.
        """
        if isinstance(exc, HTTPException):
            handler = self.by_status.get(exc.status_code)
            if handler is not None:
                return handler
        for cls in type(exc).__mro__:
            handler = self.by_class.get(cls)
            if handler is not None:
                return handler
        return None

    async def refusal(self, request: Request, exc: Exception, layers: int = 2) -> Response:
        """The answer to ``exc``, raised by a handler; ``exc`` itself when no handler takes
        it. An exception raised by the handler of ``exc`` is answered in turn (``layers``: the
        route's exception wrapper, then the exception middleware's, each give it a chance).
        """
        refuse = self.find(exc)
        if refuse is None:
            raise exc
        try:
            response = await refuse(request, exc)
        except Exception as again:
            if layers > 1:
                return await self.refusal(request, again, layers - 1)
            raise
        # A reused exception would keep each request's traceback (as Starlette does).
        exc.__traceback__ = None
        return response

    async def send(self, response: Response, scope: Scope, receive: Receive, send: Send) -> None:
        """Send ``response``. An exception a handler takes, raised once the response has
        started (a ``Response`` starts with its first ``send``), is a ``RuntimeError``, as the
        exception middleware makes it; the others go on up as they are.
        """
        try:
            await response(scope, receive, send)
        except Exception as exc:
            if self.find(exc) is None:
                raise
            raise RuntimeError("Caught handled exception, but response already started.") from exc


__all__ = ["FrontRoutes", "Handlers"]
