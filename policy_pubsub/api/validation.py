"""Checks of identifiers taken from paths and query strings."""

from __future__ import annotations

import re

from starlette.requests import Request

from policy_pubsub import constants
from policy_pubsub.api.errors import ApiError

_SUBSCRIBER = re.compile(constants.SUBSCRIBER_ID_PATTERN)
_TOPIC = re.compile(constants.TOPIC_PATTERN)
_POLICY = re.compile(constants.POLICY_ID_PATTERN)
_CONSUMER = re.compile(constants.CONSUMER_PATTERN)


def _check(value: str, pattern: re.Pattern[str], name: str, grammar: str) -> str:
    if not pattern.fullmatch(value):
        raise ApiError(
            400,
            f"{name}: {value[:300]!r} is not valid; use 1-255 of {grammar}.",
            [{"field": name, "message": f"must be 1-255 of {grammar}"}],
        )
    return value


def subscriber_id(request: Request) -> str:
    return _check(
        request.path_params["subscriber_id"], _SUBSCRIBER, "subscriber_id", "A-Za-z0-9._:-"
    )


def policy_id(request: Request) -> str:
    return _check(request.path_params["policy_id"], _POLICY, "policy_id", "A-Za-z0-9._:-")


def topic(value: str, name: str = "topic") -> str:
    return _check(value, _TOPIC, name, "A-Za-z0-9._-")


def consumer(value: str, name: str) -> str:
    return _check(value, _CONSUMER, name, "A-Za-z0-9._:-")


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    value = request.query_params.get(name)
    if value is None:
        return default
    if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
        raise ApiError(400, f"{name}: must be an integer from {low} to {high}, not {value[:50]!r}.")
    return int(value)


def seconds_param(request: Request, name: str) -> float | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    try:
        seconds = float(value) if value.isascii() else -1.0
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < 10**9:
        raise ApiError(400, f"{name}: must be a number of seconds, 0 or more, not {value[:50]!r}.")
    return seconds
