"""Reading request bodies: content type, size limit, JSON, and validation into models."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from policy_pubsub.api.errors import ApiError, from_validation

M = TypeVar("M", bound=BaseModel)

JSON_TYPES = ("application/json", "application/cambria")


async def read_json(request: Request) -> Any:
    """The body as JSON; 415 for a non-JSON content type, 413 past the size limit, 400 if
    it is not valid UTF-8 JSON.
    """
    content_type = request.headers.get("content-type", "application/json")
    media = content_type.split(";", 1)[0].strip().lower()
    if media and media not in JSON_TYPES and not media.endswith("+json"):
        raise ApiError(415, f"Content-Type {media} is not supported; send application/json.")
    limit: int = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise ApiError(400, "The request body is empty; send a JSON object.")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"The request body is not valid JSON: {exc}.") from None


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"The request body is larger than the limit of {limit} bytes.")


async def read_model(request: Request, model: type[M]) -> M:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ApiError(400, f"body: must be a JSON object, not {_kind(body)}.")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise from_validation(exc) from None


def _kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def flag(request: Request, name: str, default: bool = False) -> bool:
    """A boolean query parameter: ``true`` or ``false``."""
    value = request.query_params.get(name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ApiError(400, f"{name}: must be true or false, not {value!r}.")
