"""Message router backends, chosen by URL: ``embedded`` (in the store)."""

from __future__ import annotations

from policy_pubsub.config import Settings
from policy_pubsub.routers.base import Delivery, EmptyDelivery, GroupStats, Router, TopicStats
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
        )
    raise UnsupportedRouter(f"unsupported router URL {url!r}: this server supports 'embedded'")


__all__ = [
    "Delivery",
    "EmptyDelivery",
    "GroupStats",
    "Router",
    "TopicStats",
    "UnsupportedRouter",
    "from_url",
]
