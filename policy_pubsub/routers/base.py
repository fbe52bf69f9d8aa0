"""The contract every message router backend implements.

A router moves messages and nothing else: matching, snapshots and revisions happen before it.
It keeps ordered topics and, per consumer group, a position, with the semantics of the DMaaP
Message Router: a group reads every message once and in order; a read that delivers nothing
to its client consumes nothing; a new group starts at the oldest retained message.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType

from policy_pubsub.exceptions import NotFound, RouterUnavailable, StoreUnavailable
from policy_pubsub.routers.messages import OutMessage

log = logging.getLogger(__name__)

# The fallback of Router.lags reads each topic's stats: a few at a time, within a time budget.
LAG_CONCURRENCY = 8
LAG_BUDGET_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class GroupStats:
    name: str
    position: int
    lag: int
    last_consumed_at: int | None  # epoch milliseconds
    # Consumers attached to the group now, where the router can tell (RabbitMQ: a queue's
    # consumers); None where it cannot (a group read by long-polls has none in between).
    consumers: int | None = None


@dataclass(frozen=True, slots=True)
class QueueSummary:
    """The subscriptions' queues on a router that keeps one per subscription (RabbitMQ), over
    all of them: for ``/healthcheck``, which shows figures, never queue names.
    """

    queues: int  # those that exist (a subscription's first snapshot makes its queue)
    messages: int  # ready, over all queues
    consumers: int  # over all queues
    without_consumers: int  # queues with no consumer attached
    read_at: int  # epoch milliseconds
    complete: bool  # False when not every queue was read within the time allowed


@dataclass(frozen=True, slots=True)
class TopicStats:
    name: str
    messages: int
    last_published_at: int | None
    oldest_unread_at: int | None  # publish time of the oldest message no group has read
    consumer_groups: list[GroupStats] = field(default_factory=list)


class Delivery(ABC):
    """Messages read for a consumer group. They count as consumed only after :meth:`ack`;
    leaving the ``async with`` block without it hands them to the group's next read.
    """

    messages: Sequence[str]

    @abstractmethod
    async def ack(self) -> None:
        """Mark the messages consumed; call it once the reply carrying them was written."""

    @abstractmethod
    async def release(self) -> None:
        """Give up the delivery; unacknowledged messages stay for the group's next read."""

    async def __aenter__(self) -> Delivery:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release()


class EmptyDelivery(Delivery):
    """A read that found nothing."""

    messages: Sequence[str] = ()

    async def ack(self) -> None:
        return None

    async def release(self) -> None:
        return None


class Router(ABC):
    """A message router backend, chosen by URL (see :func:`policy_pubsub.routers.from_url`)."""

    @abstractmethod
    async def start(self) -> None:
        """Connect and start background work; after it returns the router serves reads."""

    @property
    @abstractmethod
    def max_message_bytes(self) -> int:
        """The largest message body, in bytes of UTF-8, that :meth:`publish` always delivers."""

    @property
    @abstractmethod
    def held_reads(self) -> int:
        """How many reads are held now, waiting for a message (a gauge and the tests read it)."""

    @abstractmethod
    async def drain(self) -> None:
        """Answer every held read now, consuming nothing; used when the server stops."""

    @abstractmethod
    async def close(self) -> None:
        """Stop background work and release connections; pending positions are saved."""

    @abstractmethod
    async def publish(self, batch: Sequence[OutMessage]) -> None:
        """Append the messages to their topics (creating topics as needed), keeping their order
        within each topic. When it returns, the messages are durable.

        Raises ``RouterUnavailable`` when a retry may succeed, and ``MessageRefused`` when the
        router refuses one message for good; the messages before that one are then durable and
        none after it was published.
        """

    @abstractmethod
    async def read(
        self,
        topic: str,
        group: str,
        consumer: str,
        *,
        timeout: float,
        limit: int,
        gone: asyncio.Future[None] | None = None,
    ) -> Delivery:
        """Messages after the group's position, oldest first, at most ``limit``. Waits up to
        ``timeout`` seconds for the first one, and returns empty early when ``gone`` completes
        (the client left) or the router drains. Raises ``NotFound`` for an unknown topic.
        """

    @abstractmethod
    async def topics(self) -> list[str]:
        """The names of all topics, sorted."""

    @abstractmethod
    async def stats(self, topic: str) -> TopicStats:
        """Retained messages and consumer groups of a topic; raises ``NotFound`` if unknown."""

    async def subscription_left(self, subscriber_id: str, topic: str, *, deleted: bool) -> None:
        """A subscription left ``topic``: it was deleted, or moved to another topic. Called
        after the change committed, best effort (the change stands if this fails), for a
        router that keeps something per subscriber; the default keeps nothing.
        """
        return None

    async def lags(self, topics: Sequence[str]) -> dict[str, int]:
        """Each topic's consumer lag: what its slowest consumer group has yet to read, or,
        with no group, every message it retains; topics unknown to the router are left out.
        Equal to what :meth:`stats` says per topic, read for many topics at once (a scrape
        asks for every subscription topic). This fallback calls :meth:`stats` per topic, a few
        at a time and within ``LAG_BUDGET_SECONDS`` (the topics not read by then are left
        out); a router that can read them in bulk overrides it. Raises the first
        ``StoreUnavailable`` or ``RouterUnavailable`` met.
        """
        lags: dict[str, int] = {}
        gate = asyncio.Semaphore(LAG_CONCURRENCY)
        errors: list[BaseException] = []

        async def one(topic: str) -> None:
            async with gate:
                if errors:
                    return
                try:
                    stats = await self.stats(topic)
                except NotFound:
                    return  # nothing published to it yet
                except (StoreUnavailable, RouterUnavailable) as exc:
                    errors.append(exc)
                    return
                lags[topic] = lag_of(stats)

        tasks = [asyncio.create_task(one(topic)) for topic in topics]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=LAG_BUDGET_SECONDS)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
                log.warning(
                    "consumer lag of %d of %d topics not read within %g s",
                    len(pending),
                    len(tasks),
                    LAG_BUDGET_SECONDS,
                )
        if errors:
            raise errors[0]
        return lags

    async def queue_summary(self) -> QueueSummary | None:
        """Figures over the subscriptions' queues, for a router that keeps one per
        subscription; None (the default) for the others. Cheap to call often: a router reads
        its queues at most every so often and answers from that in between.
        """
        return None

    @abstractmethod
    async def ping(self) -> None:
        """Return when the router is reachable; raise ``RouterUnavailable`` otherwise."""


def lag_of(stats: TopicStats) -> int:
    """A topic's consumer lag from its stats: the largest lag of its groups, or with no group
    every message it retains (nobody has read any).
    """
    groups = stats.consumer_groups
    return max(g.lag for g in groups) if groups else stats.messages
