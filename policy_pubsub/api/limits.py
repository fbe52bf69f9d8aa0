"""Limits under abuse: the settings' caps, checked where requests are read.

Each refusal is a clear answer (400 naming the field and the limit; 413 for an oversized
message; 503 with ``Retry-After`` when the server holds too many long-polls; 429 in the DMaaP
shape for a consumer that keeps polling an empty topic), a WARNING log line, and a count in
``policy_pubsub_limit_refusals_total``. A refusal happens before anything is written, so it
changes nothing in the store.

The long-poll counts live in this process's memory: with several replicas each one enforces
its own. The empty-poll counter keeps at most one entry per consumer that polled emptily in
the last minute, pruned every minute, and never more than ``MAX_TRACKED_CONSUMERS``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from starlette.requests import Request

from policy_pubsub.api.errors import ApiError
from policy_pubsub.api.state import app_state
from policy_pubsub.config import Settings
from policy_pubsub.metrics import Metrics
from policy_pubsub.models import PolicyFilter

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60.0
MAX_TRACKED_CONSUMERS = 100_000
HELD_POLLS_RETRY_AFTER = 5  # seconds


@dataclass(slots=True)
class _EmptyPolls:
    since: float  # start of this consumer's one-minute window
    count: int


class Limits:
    """The caps of one app, and its long-poll counts."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self.active_polls = 0
        self._per_group: dict[tuple[str, str], int] = {}
        self._empty: dict[tuple[str, str, str], _EmptyPolls] = {}
        self._pruned_at = clock()

    def _refuse(
        self,
        limit: str,
        status: int,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> ApiError:
        log.warning("refused (limit %s): %s", limit, message)
        if self._metrics is not None:
            self._metrics.refusals.labels(limit).inc()
        details = [{"field": field, "message": message}] if field else None
        return ApiError(status, message, details, headers)

    # -- request bodies ---------------------------------------------------------------------

    def check_policies(self, count: int, field: str) -> None:
        """400 when one push carries more policies than ``max_policies_per_push``."""
        cap = self._settings.max_policies_per_push
        if count > cap:
            raise self._refuse(
                "policies_per_push",
                400,
                f"{field}: {count} policies, more than the limit of {cap} per push "
                "(max_policies_per_push); split the push.",
                field,
            )

    def check_filters(
        self, filters: Sequence[PolicyFilter], field: str, *, single: bool = False
    ) -> None:
        """400 when there are more filters than ``max_filters_per_subscription``, or a filter
        lists more ids (or types) than ``max_ids_per_filter``. ``single``: ``field`` names one
        filter (the decision API's ``resource``), not a list.
        """
        cap = self._settings.max_filters_per_subscription
        if len(filters) > cap:
            raise self._refuse(
                "filters_per_subscription",
                400,
                f"{field}: {len(filters)} filters, more than the limit of {cap} "
                "(max_filters_per_subscription).",
                field,
            )
        cap = self._settings.max_ids_per_filter
        for index, one in enumerate(filters):
            for key, values in (("policy-id", one.ids()), ("policy-type", one.types())):
                if len(values) > cap:
                    where = f"{field}.{key}" if single else f"{field}[{index}].{key}"
                    raise self._refuse(
                        "ids_per_filter",
                        400,
                        f"{where}: {len(values)} values, more than the limit of {cap} per "
                        "filter (max_ids_per_filter).",
                        where,
                    )

    def check_message(self, index: int, size: int) -> None:
        """413 when a message published to ``/events`` is larger than ``max_message_bytes``."""
        cap = self._settings.max_message_bytes
        if size > cap:
            raise self._refuse(
                "message_bytes",
                413,
                f"Message {index} is {size} bytes, more than the limit of {cap} bytes "
                "(max_message_bytes).",
            )

    # -- long-polls -------------------------------------------------------------------------

    def poll_timeout_ms(self, asked: int) -> int:
        """The hold time of a long-poll: what was asked, clamped into the server's bounds."""
        settings = self._settings
        return max(settings.min_poll_timeout_ms, min(asked, settings.max_poll_timeout_ms))

    def admit_poll(self, topic: str, group: str, consumer: str) -> PollRelease:
        """Count a long-poll in, or refuse it: 429 for a consumer past its empty polls of the
        minute, 503 when the server or the group holds too many. Returns the release to call
        once the poll is answered.
        """
        self._check_empty_polls(topic, group, consumer)
        settings = self._settings
        key = (topic, group)
        if self.active_polls >= settings.max_held_polls:
            raise self._refuse(
                "held_polls",
                503,
                f"The server holds {self.active_polls} long-polls, its limit "
                f"(max_held_polls); retry in {HELD_POLLS_RETRY_AFTER} s.",
                headers={"Retry-After": str(HELD_POLLS_RETRY_AFTER)},
            )
        held = self._per_group.get(key, 0)
        if held >= settings.max_held_polls_per_group:
            raise self._refuse(
                "held_polls_per_group",
                503,
                f"Consumer group {group!r} of topic {topic!r} holds {held} long-polls, its limit "
                f"(max_held_polls_per_group); retry in {HELD_POLLS_RETRY_AFTER} s.",
                headers={"Retry-After": str(HELD_POLLS_RETRY_AFTER)},
            )
        self.active_polls += 1
        self._per_group[key] = held + 1
        return PollRelease(self, key)

    def _release_poll(self, key: tuple[str, str]) -> None:
        self.active_polls -= 1
        left = self._per_group[key] - 1
        if left:
            self._per_group[key] = left
        else:
            del self._per_group[key]

    def answered(self, topic: str, group: str, consumer: str, delivered: int) -> None:
        """A long-poll's reply was written: an empty one counts, one with messages resets."""
        cap = self._settings.max_empty_polls_per_minute
        key = (topic, group, consumer)
        if delivered or not cap:
            self._empty.pop(key, None)
            return
        now = self._clock()
        self._prune(now)
        entry = self._empty.get(key)
        if entry is None or now - entry.since >= WINDOW_SECONDS:
            self._empty.pop(key, None)  # re-inserted last: the dict stays oldest first
            if len(self._empty) >= MAX_TRACKED_CONSUMERS:
                del self._empty[next(iter(self._empty))]
            self._empty[key] = _EmptyPolls(now, 1)
        else:
            entry.count += 1

    def _check_empty_polls(self, topic: str, group: str, consumer: str) -> None:
        cap = self._settings.max_empty_polls_per_minute
        entry = self._empty.get((topic, group, consumer))
        if not cap or entry is None or entry.count < cap:
            return
        left = WINDOW_SECONDS - (self._clock() - entry.since)
        if left <= 0:
            return
        retry = max(1, math.ceil(left))
        raise self._refuse(
            "empty_polls",
            429,
            "This client is making too many requests: "
            f"{entry.count} empty polls of {topic}/{group}/{consumer} within a minute, the "
            f"limit is {cap} (max_empty_polls_per_minute). Please use a long poll setting to "
            f"decrease the number of requests that result in empty responses; retry in {retry} s.",
            headers={"Retry-After": str(retry)},
        )

    def _prune(self, now: float) -> None:
        if now - self._pruned_at < WINDOW_SECONDS:
            return
        self._pruned_at = now
        for key in [k for k, e in self._empty.items() if now - e.since >= WINDOW_SECONDS]:
            del self._empty[key]

    @property
    def tracked_consumers(self) -> int:
        """Consumers whose empty polls are being counted (bounded; for tests and metrics)."""
        return len(self._empty)


class PollRelease:
    """Counts one admitted long-poll out, the first time it is called (an object rather than
    a closure: every held poll keeps one).
    """

    __slots__ = ("_key", "_limits")

    def __init__(self, limits: Limits, key: tuple[str, str]) -> None:
        self._limits: Limits | None = limits
        self._key = key

    def __call__(self) -> None:
        limits, self._limits = self._limits, None
        if limits is not None:
            limits._release_poll(self._key)


def limits(request: Request) -> Limits:
    """The app's limits."""
    return app_state(request).limits


__all__ = ["Limits", "PollRelease", "limits"]
