"""``GET /metrics``: the server's metrics in the Prometheus text format.

Each app has its own ``CollectorRegistry`` (never prometheus-client's global one), so several
servers in one process (the tests, an embedding program) keep separate counts. Events are
counted where they happen (pushes, snapshots, errors, refusals, matching and commit times);
what needs the store or the router (outbox depth and age, consumer lag) is read when
``/metrics`` is scraped, with bounded label sets: the lag of at most ``metrics_lag_topics``
topics (the largest) and a total. Every name starts with ``policy_pubsub_``.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from policy_pubsub.exceptions import (
    PolicyPubSubError,
    RouterUnavailable,
    SnapshotTooLarge,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from policy_pubsub.api.state import AppState
    from policy_pubsub.routers.base import Router

log = logging.getLogger(__name__)

PREFIX = "policy_pubsub_"
PUSH_OUTCOMES = ("deployed", "unchanged", "rejected", "failed")
SNAPSHOT_EVENTS = ("subscribe", "update")
SNAPSHOT_LIMIT = "snapshot_bytes"
LIMITS = (
    "policies_per_push",
    "filters_per_subscription",
    "ids_per_filter",
    "message_bytes",
    "snapshot_bytes",  # a change's snapshot over the router's largest message
    "held_polls",
    "held_polls_per_group",
    "empty_polls",
)
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
# Consumer lag is read for every subscription topic at once (Router.lags), and reused between
# scrapes closer than lag_refresh_seconds.

MATCHING_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1]
MATCHING_BUCKETS += [0.25, 0.5, 1.0, 2.5, 5.0]
COMMIT_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]
COMMIT_BUCKETS += [5.0, 10.0]
BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256]


@dataclass(slots=True)
class _Scraped:
    """What the last scrape read from the service, the router, the relay and the limiter."""

    revision: int | None = None
    policies: int | None = None
    subscriptions: int | None = None
    held_reads: int | None = None
    active_polls: int | None = None
    outbox: tuple[int, float, bool, bool, int] | None = None  # depth, age, leader, failing, sent
    dead_letters: tuple[int, int] | None = None  # ever made (kept in the store), kept now
    lag_top: list[tuple[str, int]] = field(default_factory=list)
    lag_total: int | None = None
    lag_topics: int | None = None


class _ScrapeCollector(Collector):
    """Yields the gauges read at scrape time (see :meth:`Metrics.refresh`)."""

    def __init__(self) -> None:
        self.scraped = _Scraped()

    def collect(self) -> Iterable[Metric]:
        return list(self._families(self.scraped))

    @staticmethod
    def _families(s: _Scraped) -> Iterator[Metric]:
        gauges: list[tuple[str, str, float | None]] = [
            ("revision", "The store revision this server reflects.", s.revision),
            ("policies_deployed", "Policies deployed now.", s.policies),
            ("subscriptions", "Subscriptions now.", s.subscriptions),
            ("long_polls_held", "Long-polls the router holds, waiting.", s.held_reads),
            ("long_polls_active", "Long-polls this server is answering.", s.active_polls),
            ("consumer_lag_total", "Unread messages over all subscription topics.", s.lag_total),
            ("consumer_lag_topics", "Subscription topics whose lag was read.", s.lag_topics),
        ]
        for name, documentation, value in gauges:
            if value is not None:
                yield GaugeMetricFamily(PREFIX + name, documentation, value=value)
        if s.lag_total is not None:
            lag = GaugeMetricFamily(
                PREFIX + "consumer_lag",
                "Messages the slowest consumer group of a topic (with no group: anyone) has yet "
                "to read; only the topics with the largest lag.",
                labels=["topic"],
            )
            for topic, value in s.lag_top:
                lag.add_metric([topic], value)
            yield lag
        if s.outbox is not None:
            depth, age, leader, failing, sent = s.outbox
            yield GaugeMetricFamily(
                PREFIX + "outbox_depth", "Snapshots in the outbox, not yet relayed.", value=depth
            )
            yield GaugeMetricFamily(
                PREFIX + "outbox_oldest_age_seconds",
                "How long the oldest outbox snapshot has waited (0 when empty).",
                value=age,
            )
            yield GaugeMetricFamily(
                PREFIX + "outbox_relay_leader",
                "1 when this server's relay holds the outbox.",
                value=int(leader),
            )
            yield GaugeMetricFamily(
                PREFIX + "outbox_relay_failing",
                "1 while the relay's last attempt failed.",
                value=int(failing),
            )
            yield CounterMetricFamily(
                PREFIX + "outbox_relayed",
                "Outbox rows this server's relay delivered to the router.",
                value=sent,
            )
        if s.dead_letters is not None:
            total, kept = s.dead_letters
            yield CounterMetricFamily(
                PREFIX + "dead_letters",
                "Messages the router refused for good, moved to the dead letters: a count kept "
                "in the store, so it survives restarts, retries and expiry, and is the same on "
                "every replica of a shared store.",
                value=total,
            )
            yield GaugeMetricFamily(
                PREFIX + "dead_letters_kept",
                "Dead letters in the store now (until retried or past the retention window).",
                value=kept,
            )


class Metrics:
    """The metrics of one app: counters and histograms, plus gauges read at scrape time."""

    def __init__(self, *, lag_topics: int = 50, lag_refresh_seconds: float = 10.0) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.pushes = Counter(
            PREFIX + "pushes",
            "PAP pushes (deploy, undeploy, PDP_UPDATE) by outcome: deployed (something "
            "changed), unchanged, rejected (4xx), failed (5xx).",
            ["outcome"],
            registry=registry,
        )
        self.snapshots = Counter(
            PREFIX + "snapshots_published",
            "Snapshots written for subscribers (to their topic or the outbox), by event.",
            ["event"],
            registry=registry,
        )
        self.matching_seconds = Histogram(
            PREFIX + "matching_seconds",
            "Time to select the affected subscribers of a change and build their snapshots.",
            buckets=MATCHING_BUCKETS,
            registry=registry,
        )
        self.commit_seconds = Histogram(
            PREFIX + "commit_seconds",
            "Time to commit the store transaction of a change.",
            buckets=COMMIT_BUCKETS,
            registry=registry,
        )
        self.changes_per_commit = Histogram(
            PREFIX + "changes_per_commit",
            "PAP changes committed together in one store transaction (group commit).",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.store_errors = Counter(
            PREFIX + "store_errors",
            "Store failures: requests answered 503, and failed metric reads.",
            registry=registry,
        )
        self.router_errors = Counter(
            PREFIX + "router_errors",
            "Message router failures: requests answered 503, and failed metric reads.",
            registry=registry,
        )
        self.refusals = Counter(
            PREFIX + "limit_refusals",
            "Requests refused by a configured limit, by limit.",
            ["limit"],
            registry=registry,
        )
        self.stale_expired = Counter(
            PREFIX + "stale_subscriptions_expired",
            "Subscriptions removed because nobody read their topic.",
            registry=registry,
        )
        self.requests = Counter(
            PREFIX + "http_requests",
            "HTTP requests answered, by method and status.",
            ["method", "status"],
            registry=registry,
        )
        for outcome in PUSH_OUTCOMES:
            self.pushes.labels(outcome)
        for event in SNAPSHOT_EVENTS:
            self.snapshots.labels(event)
        for limit in LIMITS:
            self.refusals.labels(limit)
        self._scrape = _ScrapeCollector()
        registry.register(self._scrape)
        self._lag_topics = lag_topics
        self._lag_refresh = lag_refresh_seconds
        self._lag_read_at: float | None = None

    # -- events -----------------------------------------------------------------------------

    def pushed(self, changed: bool, notified: int) -> None:
        """A push was applied: it changed something or nothing, and notified subscribers."""
        self.pushes.labels("deployed" if changed else "unchanged").inc()
        self.snapshots.labels("update").inc(notified)

    def push_failed(self, exc: BaseException) -> None:
        """A push was answered with an error: rejected (4xx) or failed (5xx)."""
        status = getattr(exc, "status", None)  # an ApiError's HTTP status
        if isinstance(status, int):
            failed = status >= 500
        else:
            failed = isinstance(exc, (StoreUnavailable, RouterUnavailable)) or not isinstance(
                exc, PolicyPubSubError
            )
        self.pushes.labels("failed" if failed else "rejected").inc()

    def domain_error(self, exc: BaseException) -> None:
        """An error reached the HTTP boundary; count those of the store and the router, and
        changes refused for a snapshot too large for the router.
        """
        if isinstance(exc, StoreUnavailable):
            self.store_errors.inc()
        elif isinstance(exc, RouterUnavailable):
            self.router_errors.inc()
        elif isinstance(exc, SnapshotTooLarge):
            self.refusals.labels(SNAPSHOT_LIMIT).inc()

    def request(self, method: str, status: int) -> None:
        self.requests.labels(method if method in HTTP_METHODS else "other", str(status)).inc()

    # -- scrape -----------------------------------------------------------------------------

    async def refresh(self, state: AppState) -> None:
        """Read what the gauges report from the app's parts."""
        scraped = self._scrape.scraped
        scraped.active_polls = state.limits.active_polls
        if state.running is None:
            return  # not started (or stopping): only the counters
        service, router, relay = state.service, state.router, state.relay
        scraped.held_reads = router.held_reads
        scraped.revision = service.revision
        try:
            subscriptions = await service.subscriptions()
            scraped.policies = len(await service.policies())
        except StoreUnavailable as exc:
            self.store_errors.inc()
            log.warning("metrics: cannot read the store: %s", exc)
            return
        scraped.subscriptions = len(subscriptions)
        if relay is not None:
            try:
                status = await relay.status()
            except StoreUnavailable as exc:
                self.store_errors.inc()
                log.warning("metrics: cannot read the outbox: %s", exc)
            else:
                scraped.outbox = (
                    status.depth,
                    status.oldest_age_seconds or 0.0,
                    status.leader,
                    status.last_error is not None,
                    relay.published,
                )
            try:
                scraped.dead_letters = await state.store.dead_letters.figures()
            except StoreUnavailable as exc:
                self.store_errors.inc()
                log.warning("metrics: cannot read the dead letters: %s", exc)
        now = time.monotonic()
        if self._lag_read_at is None or now - self._lag_read_at >= self._lag_refresh:
            self._lag_read_at = now
            await self._read_lag(router, list({s.topic for s in subscriptions}))

    async def _read_lag(self, router: Router, topics: list[str]) -> None:
        try:
            lags = await router.lags(topics)
        except (StoreUnavailable, RouterUnavailable) as exc:
            (self.store_errors if isinstance(exc, StoreUnavailable) else self.router_errors).inc()
            log.warning("metrics: cannot read consumer lag: %s", exc)
            return
        top = heapq.nsmallest(self._lag_topics, lags.items(), key=lambda item: (-item[1], item[0]))
        scraped = self._scrape.scraped
        scraped.lag_top = top
        scraped.lag_total = sum(lags.values())
        scraped.lag_topics = len(lags)

    def render(self) -> bytes:
        return generate_latest(self.registry)


__all__ = ["Metrics"]
