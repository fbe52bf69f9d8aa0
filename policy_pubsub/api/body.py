"""Reading request bodies: content type, size limit, JSON, and validation into models."""

from __future__ import annotations

import json
import math
import re
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

from policy_pubsub.api.errors import ApiError, from_validation
from policy_pubsub.api.state import app_state

M = TypeVar("M", bound=BaseModel)

JSON_TYPES = ("application/json", "application/cambria")


async def read_json(request: Request) -> Any:
    """The body as JSON; 415 for a non-JSON content type, 413 past the size limit, 400 if
    it is not valid UTF-8 JSON; ``ClientDisconnect`` when the client left before it was in.

    The headers and the body are read straight from the scope and ``receive`` (as
    ``request.headers`` and ``request.stream()`` read them, without building either): on the
    decision API, these were a good part of a request's cost.
    """
    content_type = declared = None
    for name, value in request.scope["headers"]:
        if name == b"content-type":
            if content_type is None:
                content_type = value.decode("latin-1")
        elif name == b"content-length" and declared is None:
            declared = value.decode("latin-1")
    if content_type is not None:
        media = content_type.split(";", 1)[0].strip().lower()
        if media and media not in JSON_TYPES and not media.endswith("+json"):
            raise ApiError(415, f"Content-Type {media} is not supported; send application/json.")
    limit = app_state(request).settings.max_body_bytes
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    raw = await _read_body(request.receive, limit)
    if not raw or raw.isspace():
        raise ApiError(400, "The request body is empty; send a JSON object.")
    try:
        body = _parse(raw)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"The request body is not valid JSON: {exc}.") from None
    # A body nests no deeper than it has brackets and braces: most bodies need no walk.
    if raw.count(b"{") + raw.count(b"[") > MAX_DEPTH and _too_deep(body):
        raise ApiError(400, f"The request body nests deeper than {MAX_DEPTH} levels.")
    return body


async def _read_body(receive: Receive, limit: int) -> bytes:
    """The request's body, as ``Request.stream()`` gives it; 413 past ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.request":
            chunk: bytes = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        elif kind == "http.disconnect":
            raise ClientDisconnect()
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _parse(raw: bytes) -> Any:
    if _LONG_NUMBER.search(raw):
        # orjson reads integers past 64 bits as floats; read such bodies exactly, and
        # refuse integers that the store's JSON encoder could not write back.
        body = json.loads(raw, parse_int=_int64, parse_float=_finite, parse_constant=_no_constant)
        _no_surrogates(body)
        return body
    return orjson.loads(raw)


def _no_surrogates(value: Any) -> None:
    """``ValueError`` for a lone surrogate (``"\\ud800"``), which the stdlib reads but no
    UTF-8 encoder (orjson, the store drivers) can write; orjson refuses it on reading.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            strings: Any = (item,)
        elif isinstance(item, dict):
            strings = item.keys()
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
            continue
        else:
            continue
        for text in strings:
            if not text.isascii():
                try:
                    text.encode()
                except UnicodeEncodeError:
                    raise ValueError("str is not valid UTF-8: surrogates not allowed") from None


# orjson writes at most 254 levels; a body within this limit fits, with the snapshot's envelope.
MAX_DEPTH = 128


def _too_deep(value: Any) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > MAX_DEPTH:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


_LONG_NUMBER = re.compile(rb"[0-9]{19}")
_INT64 = range(-(2**63), 2**63)


def _int64(text: str) -> int:
    value = int(text)
    if value not in _INT64:
        raise ValueError(f"integer {text[:40]} does not fit in 64 bits")
    return value


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"The request body is larger than the limit of {limit} bytes.")


async def read_model(request: Request, model: type[M]) -> M:
    """The body, read as JSON and validated into ``model``; 400 naming each bad field."""
    return to_model(await read_json(request), model)


def to_model(body: Any, model: type[M]) -> M:
    """A JSON body validated into ``model``; 400 naming each bad field."""
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
    if not request.scope.get("query_string"):
        return default  # no query string to parse
    value = request.query_params.get(name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ApiError(400, f"{name}: must be true or false, not {value!r}.")
