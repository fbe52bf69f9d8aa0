"""Error answers: the ONAP shape everywhere, the DMaaP shape on ``/events`` and ``/topics``
(each endpoint of the route table says which: ``ErrorShape``).
"""

from __future__ import annotations

import enum
import logging
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from policy_pubsub import constants
from policy_pubsub.api.state import app_state
from policy_pubsub.exceptions import (
    InvalidRequest,
    NotFound,
    PolicyPubSubError,
    RouterUnavailable,
    SnapshotTooLarge,
    StoreUnavailable,
    SubscriptionTaken,
)
from policy_pubsub.logs import NO_ANSWER

log = logging.getLogger(__name__)

CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "TOO_MANY_REQUESTS",
    500: "INTERNAL_ERROR",
    503: "SERVICE_UNAVAILABLE",
}
MR_STATUS = {
    400: constants.MR_STATUS_BAD_REQUEST,
    404: constants.MR_STATUS_NO_TOPIC,
    413: constants.MR_STATUS_BAD_REQUEST,
    415: constants.MR_STATUS_BAD_REQUEST,
    429: constants.MR_STATUS_TOO_MANY_REQUESTS,
    503: constants.MR_STATUS_UNAVAILABLE,
}


class ErrorShape(enum.Enum):
    """The body of an error answer: ONAP's, or DMaaP Message Router's on its routes."""

    ONAP = "onap"  # {"code": "BAD_REQUEST", "error": "...", "details": [...]}
    DMAAP = "dmaap"  # {"status": 404, "mrstatus": 3001, "message": "..."}


class ApiError(Exception):
    """An answer other than 2xx, raised anywhere in an endpoint."""

    def __init__(
        self,
        status: int,
        message: str,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details or []
        self.headers = headers


def json_response(
    content: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    body = orjson.dumps(content)
    if headers is None and status >= 200 and status not in (204, 304):
        return _Json(body, status)
    return Response(body, status_code=status, headers=headers, media_type="application/json")


class _Json(Response):
    """A JSON answer with no headers of its own: the ``Response`` Starlette makes of it (the
    same status, body and headers) without working its headers out each time.
    """

    media_type = "application/json"

    def __init__(self, body: bytes, status: int) -> None:
        self.status_code = status
        self.background = None
        self.body = body
        self.raw_headers = [
            (b"content-length", str(len(body)).encode("latin-1")),
            (b"content-type", b"application/json"),
        ]


def error_response(shape: ErrorShape, error: ApiError) -> Response:
    """The answer to ``error``, in ``shape``."""
    if shape is ErrorShape.DMAAP:
        body: dict[str, Any] = {
            "status": error.status,
            "mrstatus": MR_STATUS.get(error.status, constants.MR_STATUS_BAD_REQUEST),
            "message": error.message,
        }
    else:
        body = {
            "code": CODES.get(error.status, "ERROR"),
            "error": error.message,
            "details": error.details,
        }
    return json_response(body, error.status, error.headers)


def from_validation(exc: ValidationError, prefix: str = "") -> ApiError:
    """A 400 naming every bad field, e.g. ``policy-filters[0].policy-id: must be ...``."""
    details = []
    for item in exc.errors(include_url=False):
        field = _path(prefix, item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        elif item["type"] == "missing":
            message = "required field is missing"
        details.append({"field": field or "body", "message": message})
    first = details[0] if details else {"field": "body", "message": "invalid"}
    text = f"{first['field']}: {first['message']}"
    if len(details) > 1:
        text += f" (and {len(details) - 1} more problems, see details)"
    return ApiError(400, text, details)


def _path(prefix: str, loc: tuple[int | str, ...]) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path


def from_domain(exc: PolicyPubSubError) -> ApiError:
    if isinstance(exc, NotFound):
        if exc.kind == "topic":
            return ApiError(404, f"No such topic exists.-[{exc.key}]")
        return ApiError(404, f"No {exc.kind} {exc.key!r}.")
    if isinstance(exc, InvalidRequest):
        return ApiError(400, exc.message, exc.details)
    if isinstance(exc, SubscriptionTaken):
        return ApiError(
            409,
            f"Subscriber id {exc.subscriber_id!r} is in use by a subscription this user may not "
            "change; choose another id.",
        )
    if isinstance(exc, SnapshotTooLarge):
        return ApiError(413, exc.message)
    if isinstance(exc, (StoreUnavailable, RouterUnavailable)):
        # Logged once per outage (policy_pubsub.outages), not once per refused request.
        part = "store" if isinstance(exc, StoreUnavailable) else "message router"
        return ApiError(
            503,
            f"The {part} is unavailable; nothing was changed. Retry later.",
            headers={"Retry-After": "5"},
        )
    return ApiError(400, exc.message)


async def handle_api_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, ApiError):  # pragma: no cover - registered for ApiError only
        raise exc
    return error_response(_shape(request), exc)


async def handle_domain_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, PolicyPubSubError):  # pragma: no cover
        raise exc
    state = app_state(request)
    state.metrics.domain_error(exc)
    state.outages.refused(exc)
    return error_response(_shape(request), from_domain(exc))


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):  # pragma: no cover
        raise exc
    if exc.status_code == 404:
        message = f"No route {request.url.path}."
    elif exc.status_code == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}."
    else:
        message = str(exc.detail)
    headers = dict(exc.headers) if exc.headers else None
    return error_response(_shape(request), ApiError(exc.status_code, message, headers=headers))


async def handle_client_left(request: Request, exc: Exception) -> Response:
    """The client left before its request body was in: nothing was read, nothing changed, and
    nobody is there to answer. The request's line logs ``NO_ANSWER`` (499); no traceback.
    """
    return Response(status_code=NO_ANSWER)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(_shape(request), ApiError(500, "Internal error; see the server log."))


def _shape(request: Request) -> ErrorShape:
    return app_state(request).routes.shape(request.scope)


__all__ = [
    "CODES",
    "MR_STATUS",
    "ApiError",
    "ErrorShape",
    "error_response",
    "from_domain",
    "from_validation",
    "handle_api_error",
    "handle_client_left",
    "handle_domain_error",
    "handle_http_exception",
    "handle_unexpected",
    "json_response",
]
