"""Message router backends, chosen by URL: ``embedded`` (in the store),
``dmaap+http(s)://[user:pass@]host:port`` (an external DMaaP Message Router),
``nats://host:4222`` (NATS JetStream), ``amqp(s)://user:password@host:5672/vhost`` (RabbitMQ).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from policy_pubsub.config import Settings
from policy_pubsub.routers.base import (
    Delivery,
    EmptyDelivery,
    GroupStats,
    QueueSummary,
    Router,
    TopicStats,
)
from policy_pubsub.routers.messages import OutMessage, SharedPart

if TYPE_CHECKING:  # the store imports the message type from here
    from policy_pubsub.store import Store


class UnsupportedRouter(ValueError):
    """The router URL names no backend this server has."""


def from_url(url: str, store: Store, settings: Settings) -> Router:
    """Build the router backend a URL names; backends are imported only when chosen."""
    if url == "embedded":
        from policy_pubsub.routers.embedded import EmbeddedRouter

        return EmbeddedRouter(
            store,
            retention_seconds=settings.retention_seconds,
            maintenance_interval_seconds=settings.maintenance_interval_seconds,
            position_flush_seconds=settings.position_flush_seconds,
            max_message_bytes=settings.max_message_bytes,
            snapshots_of_subscriptions=True,
        )
    if url.startswith(("dmaap+http://", "dmaap+https://")):
        from policy_pubsub.routers.dmaap import DmaapRouter

        return DmaapRouter.from_settings(url, settings)
    if url.startswith("nats://"):
        from policy_pubsub.routers.nats import NatsRouter

        return NatsRouter(
            url,
            store,
            stream=settings.nats_stream,
            max_age_seconds=settings.nats_max_age_seconds or settings.retention_seconds,
            position_flush_seconds=settings.position_flush_seconds,
        )
    if url.startswith(("amqp://", "amqps://")):
        from policy_pubsub.routers.amqp import AmqpRouter

        return AmqpRouter(
            url,
            store,
            exchange=settings.amqp_exchange,
            retention_seconds=settings.retention_seconds,
            queue_max_length=settings.amqp_queue_max_length,
            queue_type=settings.amqp_queue_type,
            max_message_bytes=settings.amqp_max_message_bytes,
            ca_file=settings.amqp_ca_file,
            timeout=settings.amqp_timeout_seconds,
            unconfirmed_attempts=settings.amqp_unconfirmed_attempts,
        )
    raise UnsupportedRouter(
        f"unsupported router URL {url!r}: use 'embedded', 'nats://HOST:PORT', "
        "'dmaap+http(s)://HOST:PORT' or 'amqp(s)://USER:PASSWORD@HOST:PORT/VHOST'"
    )


__all__ = [
    "Delivery",
    "EmptyDelivery",
    "GroupStats",
    "OutMessage",
    "QueueSummary",
    "Router",
    "SharedPart",
    "TopicStats",
    "UnsupportedRouter",
    "from_url",
]
