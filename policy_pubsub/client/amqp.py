"""``AmqpFeed``: a subscriber's snapshots straight from its RabbitMQ queue (the ``amqp`` extra).

``PolicySubscriber(..., router_url="amqp://user:password@host:5672/vhost")`` (or ``amqps://``)
reads this way instead of long-polling. The server's RabbitMQ router publishes every snapshot
to a durable topic exchange and a durable queue named after the subscriber id, bound with its
topic (:mod:`policy_pubsub.routers.amqp_shape`); this feed consumes that queue with manual
acknowledgement, ``prefetch`` messages at most in flight:

- a message is acknowledged in ``settle``, which the subscriber calls once the component
  applied a snapshot that supersedes it (the change it brought, or a newer one); a message
  for another subscriber of a shared topic, which the component never sees, at once. What is
  not acknowledged when the connection drops, RabbitMQ delivers again;
- the queue is only looked up (``queue.declare`` passive), never made: the server's relay
  declares it, with arguments only the server knows (its retention, its length limit, quorum
  or classic), just before the subscription's first snapshot leaves. A queue declared here
  with other arguments would make the relay's declaration fail and the server refuse the
  subscription's snapshots for good, and one made without them would never be bound to the
  topic. So a queue that does not exist yet is a ``TransientError``, waited out like a topic
  a router does not have yet: the reader backs off, re-reads the subscription, and looks
  again. The exchange (``exchange``, the server's ``amqp_exchange``) is looked up only then,
  to say which of the two is missing: an exchange missing too means the server's router is
  not on this broker and vhost, or has not connected yet;
- a lost connection or channel, and a consumer RabbitMQ cancelled (the queue was deleted:
  an unsubscribe from elsewhere), are ``TransientError`` at the next ``poll``; the poll after
  that connects again.

The connection is a plain one (not aio-pika's robust one), so an outage surfaces at once and
the reconnects follow the subscriber's backoff (``Timings``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from typing import Any

import aio_pika
import aio_pika.abc
import aio_pika.exceptions

from policy_pubsub.client.changes import addressed_to
from policy_pubsub.client.feed import Feed
from policy_pubsub.client.http import TransientError, TransientKind, without_credentials

__all__ = ["AmqpFeed", "amqp_ssl_context"]

log = logging.getLogger("policy_pubsub.client")

#: What the AMQP client raises when RabbitMQ cannot be reached, drops the connection or the
#: channel (RuntimeError: aiormq's ChannelInvalidStateError), or does not answer in time.
_FAILURES = (aio_pika.exceptions.AMQPError, OSError, RuntimeError, TimeoutError)


def amqp_ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """The TLS context of an ``amqps://`` connection: the system CAs, or only those in the PEM
    bundle ``ca_file`` (as the server's ``POLICY_PUBSUB_AMQP_CA_FILE``).
    """
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"amqp_ca_file {ca_file!r} is not a readable PEM file: {exc}") from exc


class AmqpFeed(Feed):
    """Consumes the queue ``queue`` (a subscriber id) on the broker at ``url``; see the module
    docstring. ``timeout`` bounds connecting and each request to RabbitMQ.
    """

    def __init__(
        self,
        url: str,
        *,
        queue: str,
        exchange: str,
        prefetch: int,
        timeout: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not url.startswith(("amqp://", "amqps://")):
            raise ValueError("not an AMQP URL (amqp(s)://user:password@host:port/vhost)")
        if ssl_context is None and url.startswith("amqps://"):
            ssl_context = amqp_ssl_context(None)
        self._url = url
        self._shown = without_credentials(url)
        self._queue = queue
        self._exchange = exchange
        self._prefetch = prefetch
        self._timeout = timeout
        self._ssl = ssl_context
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._arrived: deque[aio_pika.abc.AbstractIncomingMessage] = deque()
        self._unsettled: list[aio_pika.abc.AbstractIncomingMessage] = []
        self._wake: asyncio.Event | None = None
        self._lost: str | None = None  # why the consumer stopped; reported by the next poll

    async def poll(self, *, timeout: float) -> list[Any]:
        await self._raise_if_lost()
        await self._consume()
        if not self._arrived:
            wake = self._wake
            if wake is None:  # pragma: no cover - _consume made it
                raise RuntimeError("poll() before the consumer started")
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout)
            await self._raise_if_lost()
        return await self._take()

    async def settle(self) -> None:
        taken, self._unsettled = self._unsettled, []
        for message in taken:
            try:
                await message.ack()
            except _FAILURES as exc:
                # The connection is gone: RabbitMQ delivers these again, and the subscriber
                # drops them as not newer than what it applied.
                self._lose(f"acknowledging failed: {_reason(exc)}")
                return

    async def aclose(self) -> None:
        await self._drop()

    # -- internals --------------------------------------------------------------------------

    async def _take(self) -> list[Any]:
        """The messages that arrived, as text; another subscriber's (a shared topic) are
        acknowledged now, the subscriber's own once ``settle`` says it applied past them.
        """
        bodies: list[Any] = []
        while self._arrived:
            message = self._arrived.popleft()
            body = message.body.decode("utf-8", errors="replace")
            bodies.append(body)
            if addressed_to(body, self._queue):
                self._unsettled.append(message)
                continue
            try:
                await message.ack()
            except _FAILURES as exc:
                self._lose(f"acknowledging failed: {_reason(exc)}")
        return bodies

    async def _consume(self) -> None:
        """Connect, look the queue up and consume it, unless that is already done."""
        if self._channel is not None and not self._channel.is_closed:
            return
        if self._wake is None:
            self._wake = asyncio.Event()
        if self._connection is None or self._connection.is_closed:
            self._connection = await self._connect()
        connection = self._connection
        try:
            channel = await connection.channel(publisher_confirms=False)
            await channel.set_qos(prefetch_count=self._prefetch, timeout=self._timeout)
            try:
                queue = await channel.declare_queue(
                    self._queue, passive=True, timeout=self._timeout
                )
            except aio_pika.exceptions.ChannelNotFoundEntity:
                reason = await self._missing(connection)
                raise TransientError(self._shown, reason, kind="status", status=404) from None
            underlay = await channel.get_underlay_channel()
            underlay.on_consumer_cancel_callbacks.add(self._cancelled_by_broker(channel))
            channel.close_callbacks.add(self._closed(channel))
            self._channel = channel  # before consuming: deliveries may come before consume-ok
            await queue.consume(self._arrival(channel), no_ack=False, timeout=self._timeout)
        except _FAILURES as exc:
            await self._drop()
            raise TransientError(
                self._shown, f"consuming queue {self._queue!r} failed: {_reason(exc)}", kind="cut"
            ) from exc
        log.info("consuming queue %s on %s", self._queue, self._shown)

    async def _connect(self) -> aio_pika.abc.AbstractConnection:
        try:
            connection = await aio_pika.connect(
                self._url,
                timeout=self._timeout,
                ssl_context=self._ssl,
                client_properties={"connection_name": f"policy-pubsub-client {self._queue}"},
            )
        except _FAILURES as exc:
            kind: TransientKind = "unreachable"
            if isinstance(exc, TimeoutError):
                kind = "timeout"
            raise TransientError(self._shown, f"connect failed: {_reason(exc)}", kind=kind) from exc
        connection.close_callbacks.add(self._closed(connection))
        return connection

    async def _missing(self, connection: aio_pika.abc.AbstractConnection) -> str:
        """Why the queue is not there, for the log: not declared yet, or not this broker."""
        exists = True
        with contextlib.suppress(*_FAILURES):
            channel = await connection.channel(publisher_confirms=False)
            try:
                await channel.get_exchange(self._exchange, ensure=True)
            except aio_pika.exceptions.ChannelNotFoundEntity:
                exists = False
            finally:
                if not channel.is_closed:
                    await channel.close()
        if exists:
            return (
                f"queue {self._queue!r} does not exist yet (the server declares it just "
                "before the subscription's first snapshot)"
            )
        return (
            f"neither queue {self._queue!r} nor exchange {self._exchange!r} exist: the "
            "server's router is not on this broker and vhost, uses another exchange, or has "
            "not connected yet"
        )

    def _arrival(self, channel: aio_pika.abc.AbstractChannel) -> Any:
        """The consumer callback of ``channel``: what a channel the feed let go of still
        delivers is left to go back to the queue with it.
        """

        async def arrive(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            if channel is self._channel:
                self._arrived.append(message)
                if self._wake is not None:
                    self._wake.set()

        return arrive

    def _closed(self, owner: object) -> Any:
        """A close callback for ``owner`` (the connection or the channel) that reports the loss
        unless the feed itself let go of it.
        """

        def closed(_sender: object, exc: BaseException | None = None) -> None:
            if owner is self._connection or owner is self._channel:
                what = "connection" if owner is self._connection else "channel"
                self._lose(f"the {what} closed: {_reason(exc) if exc else 'closed'}")

        return closed

    def _cancelled_by_broker(self, channel: aio_pika.abc.AbstractChannel) -> Any:
        def cancelled(_frame: object) -> None:
            if channel is self._channel:
                self._lose(f"RabbitMQ cancelled the consumer of queue {self._queue!r} (deleted)")

        return cancelled

    def _lose(self, reason: str) -> None:
        if self._lost is None:
            self._lost = reason
        if self._wake is not None:
            self._wake.set()

    async def _raise_if_lost(self) -> None:
        if self._lost is not None:
            reason = self._lost
            # Let go now; the next poll connects again, after the reader's backoff.
            await self._drop()
            raise TransientError(self._shown, reason, kind="cut")

    async def _drop(self) -> None:
        """Let the connection go: RabbitMQ puts back what was not acknowledged."""
        connection, self._connection, self._channel = self._connection, None, None
        self._arrived.clear()
        self._unsettled.clear()
        self._lost = None
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(*_FAILURES):
                await connection.close()


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
