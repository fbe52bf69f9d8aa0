"""Where a subscriber's snapshots arrive from: the ``Feed`` contract and the HTTP long-poll.

A feed hands the ``Reader`` the messages on the subscriber's topic, oldest first; the reader
picks its own snapshots out of them and keeps the newest. Two feeds:

- ``HttpFeed``: long-polls ``GET /events/{topic}/{group}/{consumer}`` on the server or a DMaaP
  Message Router, which acknowledges what it answered by itself;
- ``AmqpFeed`` (:mod:`policy_pubsub.client.amqp`, with the ``amqp`` extra): consumes the
  subscriber's own RabbitMQ queue and acknowledges a message only in ``settle``, once the
  component applied a snapshot that supersedes it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from policy_pubsub.client.wire import Wire

__all__ = ["Feed", "HttpFeed"]


class Feed(ABC):
    """The messages of one subscriber's topic, as they arrive."""

    @abstractmethod
    async def poll(self, *, timeout: float) -> list[Any]:
        """The messages that arrived, oldest first, waiting up to ``timeout`` seconds for the
        first (``[]`` when none came); ``TransientError`` when the source cannot be read now.
        """

    @abstractmethod
    async def settle(self) -> None:
        """The component applied a snapshot that supersedes every message ``poll`` returned so
        far: acknowledge them. Never raises; what is not acknowledged comes again.
        """

    @abstractmethod
    async def aclose(self) -> None:
        """Release what the feed holds (a connection); ``poll`` may open it again."""


class HttpFeed(Feed):
    """Long-polls of the MR read API as consumer ``group``/``consumer``; the router counts an
    answered poll as read, so ``settle`` has nothing to do.
    """

    def __init__(self, wire: Wire, *, topic: str, group: str, consumer: str, limit: int) -> None:
        self._wire = wire
        self._topic = topic
        self._group = group
        self._consumer = consumer
        self._limit = limit

    async def poll(self, *, timeout: float) -> list[Any]:
        return await self._wire.poll(
            self._topic, self._group, self._consumer, timeout=timeout, limit=self._limit
        )

    async def settle(self) -> None:
        return None

    async def aclose(self) -> None:
        return None  # the HTTP client is the subscriber's
