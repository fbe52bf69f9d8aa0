"""What the RabbitMQ router puts on the broker, so that any AMQP client can consume it.

- One durable **topic exchange** (``policy-pubsub`` unless ``amqp_exchange`` says otherwise).
  Every message is published to it with its topic (the subscriber's ``subscriber_topic``) as
  routing key, persistent, ``content_type`` ``application/json``, ``message_id`` the snapshot's
  de-duplication id (or its digest, see :func:`message_id`) and a ``revision`` header; the
  body is exactly the snapshot JSON a ``/events`` reader gets.
- Per subscription one durable **queue named after its subscriber_id**, bound to the exchange
  with its topic: a quorum queue where the broker has them (RabbitMQ 3.8 and later), else a
  classic one. Messages live in it for the retention (``x-message-ttl``), and it keeps at most
  ``amqp_queue_max_length`` ready messages, dropping the oldest (``x-max-length`` with
  ``x-overflow: drop-head``): an older snapshot is superseded by the newer ones behind it, and
  the revision in each lets a consumer drop what it already has. Messages delivered and not yet
  acknowledged do not count against the limit, so the one a consumer is applying stays.
- Per consumer group of the MR read API (``GET /events/{topic}/{group}/{consumer}``) that is not
  a subscriber's own, one durable **group queue** ``<exchange>.group.<topic>.<group>``, made at
  the group's first read and deleted by the broker after it went unused for the retention
  (``x-expires``).

Queue names are at most 255 bytes (an AMQP short string): a group queue's longer name is cut
and ends in a digest of the whole.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq

from policy_pubsub import constants
from policy_pubsub.routers.messages import OutMessage

DEFAULT_EXCHANGE = constants.DEFAULT_AMQP_EXCHANGE
REVISION_HEADER = "revision"
CONTENT_TYPE = "application/json"
PERSISTENT = 2  # delivery_mode
MAX_NAME_BYTES = 255
#: RabbitMQ version from which quorum queues exist.
QUORUM_SINCE = (3, 8)


@dataclass(frozen=True, slots=True)
class QueueShape:
    """The arguments every queue this router declares carries."""

    quorum: bool
    retention_ms: int
    max_length: int

    def arguments(self, *, expires: bool = False) -> dict[str, Any]:
        """Queue arguments; ``expires`` for a group queue, which the broker deletes once unused
        for the retention.
        """
        arguments: dict[str, Any] = {
            "x-message-ttl": self.retention_ms,
            "x-max-length": self.max_length,
            "x-overflow": "drop-head",
        }
        if self.quorum:
            arguments["x-queue-type"] = "quorum"
        if expires:
            arguments["x-expires"] = self.retention_ms
        return arguments


def has_quorum_queues(server_properties: dict[str, Any]) -> bool:
    """Whether the broker announced a RabbitMQ version with quorum queues."""
    product = str(server_properties.get("product", ""))
    version = server_properties.get("version", b"")
    text = version.decode() if isinstance(version, bytes) else str(version)
    if "RabbitMQ" not in product:
        return False
    try:
        major, minor = (int(part) for part in text.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= QUORUM_SINCE


def group_queue(exchange: str, topic: str, group: str) -> str:
    """The queue of an MR read API consumer group that is not a subscriber's own."""
    name = f"{exchange}.group.{topic}.{group}"
    if len(name.encode()) <= MAX_NAME_BYTES:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:32]
    head = name.encode()[: MAX_NAME_BYTES - len(digest) - 1].decode(errors="ignore")
    return f"{head}.{digest}"


def message_id(dedup_id: str | None) -> str | None:
    """The ``message_id`` of a snapshot: its de-duplication id, or, when that is longer than
    an AMQP short string takes (255 bytes: a subscriber id near its limit), ``sha256:`` and
    the hex digest of it.
    """
    if dedup_id is None or len(dedup_id.encode()) <= MAX_NAME_BYTES:
        return dedup_id
    return "sha256:" + hashlib.sha256(dedup_id.encode()).hexdigest()


def amqp_properties(message: OutMessage) -> aiormq.spec.Basic.Properties:
    """A snapshot's properties as published: persistent JSON, its de-duplication id and
    revision. The router hands them to the AMQP client as they are, one object per message.
    """
    return aiormq.spec.Basic.Properties(
        content_type=CONTENT_TYPE,
        delivery_mode=PERSISTENT,
        message_id=message_id(message.dedup_id),
        headers=None if message.revision is None else {REVISION_HEADER: message.revision},
    )


def amqp_message(message: OutMessage) -> aio_pika.Message:
    """A snapshot as an aio-pika message, with the properties of :func:`amqp_properties`."""
    return aio_pika.Message(
        message.body.encode(),
        content_type=CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message_id(message.dedup_id),
        headers=None if message.revision is None else {REVISION_HEADER: message.revision},
    )


__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_EXCHANGE",
    "PERSISTENT",
    "REVISION_HEADER",
    "QueueShape",
    "amqp_message",
    "amqp_properties",
    "group_queue",
    "has_quorum_queues",
    "message_id",
]
