"""The RabbitMQ router: ``--router amqp://user:password@host:5672/vhost`` (or ``amqps://``).

The shape on the broker (exchange, queues, message properties) is drawn in
:mod:`policy_pubsub.routers.amqp_shape`; components consume their queue with any AMQP client,
or with the SDK (``PolicySubscriber(..., router_url="amqp://...")``, see
:mod:`policy_pubsub.client.amqp`).

Publishing. The outbox relay hands batches to :meth:`AmqpRouter.publish`. Before a snapshot
leaves, its subscriber's queue is declared and bound to its topic (idempotent, and remembered
by this process): the queue is made by the first snapshot of the subscription, the one its
subscribe writes, so a subscribe while RabbitMQ is down is acknowledged, waits in the outbox
with its snapshot, and gets its queue once RabbitMQ is back. The messages are then written in
order on one channel with publisher confirms, pipelined, and ``publish`` returns once RabbitMQ
confirmed every one (for a persistent message on a durable queue: written to disk, and for a
quorum queue, to a majority). A snapshot returned unroutable (its queue was deleted behind this
process's back) has its queue declared again and is sent again.

Refused for good (``MessageRefused``), found before anything of the batch from it on is sent:
a message over ``max_message_bytes``, and a queue RabbitMQ will not declare (an
``amq.``-prefixed subscriber id, or a queue of that name made with other arguments). The same
refusal from RabbitMQ while publishing (channel closed with 406, e.g. over its
``max_message_size``) is one too; RabbitMQ drops what followed on that channel. Anything else
(connection lost, a nack, no confirm within the timeout) is ``RouterUnavailable``, and the
relay retries the batch.

Reading (the MR read API). ``read(topic, group, ...)`` takes messages from a queue with
``basic.get``, without acknowledging them; :meth:`Delivery.ack` acknowledges them once the
reply was written, and a delivery released (or a reply lost with its connection) closes its
channel, so RabbitMQ puts them back. The queue is the subscriber's own when ``group`` is the
subscriber id of a subscription on that topic (the SDK's default group), else the group's
queue (see :mod:`.amqp_shape`), made at its first read: such a group gets what was published
after that, not what was published before (RabbitMQ keeps queues, not a log). With nothing
ready, a read consumes the queue until the first message arrives, its deadline, the client
leaves or the router drains; nothing polls.

Stats. A topic's consumer groups are its subscribers' queues (and the group queues this process
has made), each with its ready messages as lag and its consumers attached now, both from a
passive ``queue.declare`` (AMQP says nothing more: messages delivered and not yet acknowledged
are not in its count, and RabbitMQ does not say when a queue was last consumed, so
``last_consumed_at`` is never known; ``oldest_unread_at`` is estimated as the last publish time
while any queue lags). Many queues are read ``COUNT_CONCURRENCY`` at a time, each reader on a
channel of its own (a queue that does not exist closes the channel that asked): ``lags`` reads
every subscription topic's queues at once within ``LAG_BUDGET_SECONDS``, and
``queue_summary`` (for ``/healthcheck``) reads all of them at most every
``SUMMARY_MAX_AGE_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import aio_pika.abc
import aio_pika.exceptions
import aiormq
import aiormq.exceptions
from sqlalchemy import select

from policy_pubsub.exceptions import MessageRefused, NotFound, RouterUnavailable
from policy_pubsub.routers.amqp_shape import (
    QueueShape,
    amqp_properties,
    group_queue,
    has_quorum_queues,
)
from policy_pubsub.routers.base import (
    LAG_BUDGET_SECONDS,
    Delivery,
    EmptyDelivery,
    GroupStats,
    QueueSummary,
    Router,
    TopicStats,
)
from policy_pubsub.routers.holding import HeldReads
from policy_pubsub.routers.messages import OutMessage
from policy_pubsub.store import Store, now_ms
from policy_pubsub.store.tables import subscriptions

log = logging.getLogger(__name__)

#: The client errors that mean RabbitMQ cannot be reached or did not answer in time.
_TRANSIENT = (aiormq.exceptions.AMQPError, aio_pika.exceptions.AMQPException, OSError, TimeoutError)
#: A channel closed with these refuses the same request for ever (403, 406).
_REFUSALS = (aiormq.exceptions.ChannelAccessRefused, aiormq.exceptions.ChannelPreconditionFailed)
#: Messages published and not yet confirmed, at most, on the confirming channel.
PUBLISH_WINDOW = 256
#: Passive declares in flight at once when reading many queues' counts (a channel each).
COUNT_CONCURRENCY = 16
#: Channel numbers the queue-count readers take in turn (RabbitMQ allows 2047 by default).
COUNT_CHANNELS = 2000
#: ``queue_summary`` reads the queues at most this often, and answers from that in between.
SUMMARY_MAX_AGE_SECONDS = 15.0


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """What a passive ``queue.declare`` says of a queue."""

    messages: int  # ready to be delivered (not those delivered and not yet acknowledged)
    consumers: int


class _Refused(Exception):
    """RabbitMQ refused a request for good; the text is its reason."""


@contextlib.contextmanager
def _unavailable(url: str, action: str) -> Iterator[None]:
    """Translate the AMQP client's errors into ``RouterUnavailable`` at the boundary."""
    try:
        yield
    except _TRANSIENT as exc:
        raise RouterUnavailable(f"RabbitMQ at {url}: {action} failed: {exc!r}") from exc
    except RuntimeError as exc:  # aiormq's ChannelInvalidStateError: the channel is gone
        raise RouterUnavailable(f"RabbitMQ at {url}: {action} failed: {exc!r}") from exc


class QueueDelivery(Delivery):
    """Messages taken from a queue on a channel of their own: acknowledged one by one, and
    everything else the channel holds goes back to the queue when it closes.
    """

    def __init__(
        self,
        channel: aio_pika.abc.AbstractChannel,
        messages: list[aio_pika.abc.AbstractIncomingMessage],
    ) -> None:
        self._channel = channel
        self._taken = messages
        self.messages = [m.body.decode() for m in messages]

    async def ack(self) -> None:
        if self._channel.is_closed:
            return
        try:
            for message in self._taken:
                await message.ack()
        finally:
            await self.release()

    async def release(self) -> None:
        if not self._channel.is_closed:
            with contextlib.suppress(*_TRANSIENT, RuntimeError):
                await self._channel.close()


class AmqpRouter(Router):
    """Snapshots through one RabbitMQ topic exchange into a durable queue per subscription."""

    def __init__(
        self,
        url: str,
        store: Store,
        *,
        exchange: str,
        retention_seconds: float,
        queue_max_length: int,
        max_message_bytes: int,
        ca_file: str | None = None,
        timeout: float = 10.0,
        unconfirmed_attempts: int = 3,
        queue_type: str = "quorum",
    ) -> None:
        if not url.startswith(("amqp://", "amqps://")):
            raise ValueError("not an AMQP router URL (amqp(s)://user:password@host:port/vhost)")
        self._url = url
        self._shown = _without_password(url)
        self._store = store
        self._exchange_name = exchange
        self._retention_ms = max(1, int(retention_seconds * 1000))
        self._max_length = queue_max_length
        self._max_message_bytes = max_message_bytes
        self._ssl = _ssl_context(ca_file) if url.startswith("amqps://") else None
        self._timeout = timeout
        if queue_type not in ("quorum", "classic"):
            raise ValueError(f"queue type {queue_type!r}: quorum or classic")
        self._quorum = queue_type == "quorum"
        self._unconfirmed_attempts = max(1, unconfirmed_attempts)
        # (topic, queue) -> attempts in a row in which its message had no confirm in time.
        self._waiting: dict[tuple[str, str | None], int] = {}
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._publisher: aio_pika.abc.AbstractChannel | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None
        self._declarer: aio_pika.abc.AbstractChannel | None = None
        self._shape = QueueShape(quorum=True, retention_ms=self._retention_ms, max_length=1)
        self._connecting = asyncio.Lock()
        self._declaring = asyncio.Lock()
        self._bound: dict[str, str] = {}  # queue -> the topic it was bound to by this process
        self._group_queues: dict[str, set[str]] = {}  # topic -> group queues made here
        self._topics: set[str] = set()
        self._last_published: dict[str, int] = {}
        self._held = HeldReads()
        self._summary: QueueSummary | None = None
        # Queue counts go over a connection of their own: a passive declare of a missing queue
        # closes its channel, and channels opened again at once can race the client's reuse
        # of channel numbers ("second 'channel.open' seen"), which closes the whole connection.
        self._counter: aio_pika.abc.AbstractConnection | None = None
        self._counter_connecting = asyncio.Lock()
        self._count_channel = 0  # the last channel number a queue-count reader took
        self._summarising: asyncio.Task[QueueSummary] | None = None

    @property
    def max_message_bytes(self) -> int:
        """The setting ``amqp_max_message_bytes``: AMQP does not announce the broker's own
        ``max_message_size`` (128 MiB by default in RabbitMQ 3.10), which it must not exceed.
        """
        return self._max_message_bytes

    @property
    def held_reads(self) -> int:
        return self._held.count

    @property
    def exchange(self) -> str:
        """The name of the topic exchange snapshots are published to."""
        return self._exchange_name

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect once; RabbitMQ being down does not stop the server (the relay retries)."""
        self._held.start()
        try:
            await self._connect()
        except RouterUnavailable as exc:
            log.warning("RabbitMQ not reachable yet, publishing will retry: %s", exc)

    async def drain(self) -> None:
        self._held.drain()

    async def close(self) -> None:
        await self.drain()
        summarising, self._summarising = self._summarising, None
        if summarising is not None:
            summarising.cancel()
            await asyncio.wait((summarising,))
        counter, self._counter = self._counter, None
        if counter is not None:
            with contextlib.suppress(*_TRANSIENT, RuntimeError):
                await counter.close()
        connection, self._connection = self._connection, None
        self._publisher = self._exchange = self._declarer = None
        if connection is not None:
            with contextlib.suppress(*_TRANSIENT, RuntimeError):
                await connection.close()

    async def _connect(self) -> aio_pika.abc.AbstractConnection:
        """The connection, made on first use and again at the first use after it was lost.

        A plain connection, not aio-pika's robust one: a robust connection's channels wait for
        the reconnect, so a publish or a read during an outage would hang instead of raising
        ``RouterUnavailable`` at once. Here an operation on a lost connection fails, and the
        next one (the relay's retry, the component's next poll) connects again.
        """
        async with self._connecting:
            if self._connection is not None and _alive(self._connection):
                return self._connection
            with _unavailable(self._shown, "connect"):
                connection = await aio_pika.connect(
                    self._url,
                    timeout=self._timeout,
                    ssl_context=self._ssl,
                    client_properties={"connection_name": "policy-pubsub"},
                )
                try:
                    properties = connection.transport.connection.server_properties  # type: ignore[union-attr]
                    quorum = self._quorum and has_quorum_queues(dict(properties))
                    publisher = await connection.channel(
                        publisher_confirms=True, on_return_raises=True
                    )
                    exchange = await publisher.declare_exchange(
                        self._exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
                    )
                except BaseException:
                    await connection.close()
                    raise
            self._shape = QueueShape(quorum, self._retention_ms, self._max_length)
            self._connection, self._publisher, self._exchange = connection, publisher, exchange
            log.info(
                "connected to RabbitMQ at %s (exchange %s, %s queues)",
                self._shown,
                self._exchange_name,
                "quorum" if quorum else "classic",
            )
            return connection

    # -- writing ----------------------------------------------------------------------------

    async def publish(self, batch: Sequence[OutMessage]) -> None:
        if not batch:
            return
        await self._connect()
        bodies: list[bytes] = []
        refused: str | None = None
        for message in batch:
            body = message.body.encode()
            if len(body) > self._max_message_bytes:
                refused = (
                    f"{len(body)} bytes, over the largest message of {self._max_message_bytes}"
                )
                break
            key = message.key
            if key is not None and self._bound.get(key) != message.topic:
                try:
                    await self._declare(key, message.topic)
                except _Refused as exc:
                    refused = str(exc)
                    break
            bodies.append(body)
        try:
            await self._send(batch[: len(bodies)], bodies)
        except _Refused as exc:
            # RabbitMQ closed the channel at one message and dropped what followed it, or a
            # queue does not confirm: its messages still waiting are dropped with the channel.
            await self._drop_publisher()
            raise MessageRefused(exc.args[1], str(exc.args[0])) from exc
        if refused is not None:
            message = batch[len(bodies)]
            log.error(
                "RabbitMQ refused a message for subscriber %s on topic %s: %s",
                message.key,
                message.topic,
                refused,
            )
            raise MessageRefused(message, refused)

    async def _send(self, batch: Sequence[OutMessage], bodies: Sequence[bytes]) -> None:
        """Publish in order on the one confirming channel, at most ``PUBLISH_WINDOW``
        unconfirmed at a time, and return once every message is confirmed. The timeout is for
        each confirm after the one before it (a large batch on a slow broker does not time out
        for its size), kept by this loop rather than by a timer per message. Sending stops at
        the first failure.

        A message with no confirm within the timeout while RabbitMQ confirmed later ones and
        answers on the connection is stuck at its queue (a quorum queue with no leader, say).
        That is ``RouterUnavailable`` (the relay tries again) until the same queue let its
        message wait in ``unconfirmed_attempts`` attempts in a row; then the first such message
        of the batch is refused (``MessageRefused``, a dead letter), so that one broken queue
        does not hold up every other subscriber for ever. Unconfirmed, it is not published. The
        queue's count is kept until it confirms a message: while it stays stuck, its next
        message is refused at its first timeout.
        """
        if not batch:
            return
        channel = await self._publishing_channel()
        exchange = self._exchange_name
        loop = asyncio.get_running_loop()
        sending: list[asyncio.Task[Any]] = []
        timed_out = False
        try:
            for index, message in enumerate(batch):
                if index >= PUBLISH_WINDOW:
                    oldest = sending[index - PUBLISH_WINDOW]
                    if not await self._confirmed(oldest):
                        timed_out = True
                        break
                    if oldest.cancelled() or oldest.exception() is not None:
                        break
                sending.append(
                    loop.create_task(
                        channel.basic_publish(
                            bodies[index],
                            exchange=exchange,
                            routing_key=message.topic,
                            properties=amqp_properties(message),
                            mandatory=message.key is not None,
                            wait=False,  # the timeout is the window's, not a timer each
                        )
                    )
                )
            if not timed_out:
                for task in sending:
                    if not await self._confirmed(task):
                        timed_out = True  # every message sent had the timeout by now
                        break
            unconfirmed = [m for m, t in zip(batch, sending, strict=False) if not t.done()]
            for message, task in zip(batch, sending, strict=False):
                if task.done() and not task.cancelled() and task.exception() is None:
                    self._waiting.pop((message.topic, message.key), None)
            if unconfirmed:
                await self._unconfirmed(unconfirmed, answered=len(unconfirmed) < len(sending))
        finally:
            for task in sending:
                task.cancel()  # none left but when this failed or was cancelled
        returned: list[OutMessage] = []
        for message, task in zip(batch, sending, strict=False):
            # The first failure in batch order is the one to report: a channel closed at one
            # message fails every confirm still awaited, those after it included.
            if task.cancelled():
                raise asyncio.CancelledError()
            error = task.exception()
            if error is None:
                continue
            if isinstance(error, aio_pika.exceptions.PublishError):
                returned.append(message)
                continue
            if isinstance(error, _REFUSALS):
                raise _Refused(str(error), message) from error
            if isinstance(error, (*_TRANSIENT, RuntimeError)):
                raise RouterUnavailable(
                    f"RabbitMQ at {self._shown}: publish failed: {error!r}"
                ) from error
            raise error
        if len(sending) < len(batch):  # stopped by a failure that is not one: cannot be
            raise RouterUnavailable(f"RabbitMQ at {self._shown}: publish stopped")
        for message in returned:
            # Unroutable: no queue is bound to its topic any more. Declare its queue and send.
            if message.key is not None:
                self._bound.pop(message.key, None)
                await self._declare(message.key, message.topic)
                await self._publish_one(message)
        at = now_ms()
        for message in batch:
            self._last_published[message.topic] = at
            self._topics.add(message.topic)

    async def _confirmed(self, task: asyncio.Task[Any]) -> bool:
        """Wait until a message sent is confirmed (or failed); False when no answer came for
        it within the timeout. Messages are waited for in the order sent, so each wait starts
        at the latest when the one before it was answered.
        """
        if not task.done():
            await asyncio.wait((task,), timeout=self._timeout)
        return task.done()

    async def _unconfirmed(self, messages: Sequence[OutMessage], *, answered: bool) -> None:
        """Messages with no confirm within the timeout, in batch order: always raises.
        ``answered`` is whether RabbitMQ confirmed other messages of the batch meanwhile.

        When RabbitMQ answers (confirms of others, or an exchange check on the connection),
        the queue of the first of these messages is stuck: it counts one more attempt, and its
        message is refused once it reached ``unconfirmed_attempts``. Otherwise RabbitMQ itself
        does not answer, which no queue is to blame for.
        """
        stalled = f"no confirm within {self._timeout:g} s"
        if not answered:
            try:
                async with asyncio.timeout(self._timeout):
                    await self.ping()
            except TimeoutError:
                raise RouterUnavailable(
                    f"RabbitMQ at {self._shown}: publish failed: {stalled}, and no answer "
                    f"to a check of the exchange either"
                ) from None
            except RouterUnavailable as exc:
                raise RouterUnavailable(
                    f"RabbitMQ at {self._shown}: publish failed: {stalled}, and {exc}"
                ) from exc
        # RabbitMQ confirms a channel's messages in order: those behind the first one waiting
        # may be held up by it, so only its queue is to blame. The channel goes, so that the
        # message RabbitMQ holds does not hold up the next attempt's confirms too.
        await self._drop_publisher()
        first = messages[0]
        key = (first.topic, first.key)
        attempts = self._waiting[key] = self._waiting.get(key, 0) + 1
        queue = first.key if first.key is not None else f"bound to {first.topic!r}"
        if attempts >= self._unconfirmed_attempts:
            raise _Refused(
                f"queue {queue} did not confirm the message in {attempts} attempts "
                f"({stalled} each) while RabbitMQ confirmed others",
                first,
            )
        raise RouterUnavailable(
            f"RabbitMQ at {self._shown}: publish failed: {stalled} for {len(messages)} "
            f"message(s), the first to queue {queue} (attempt {attempts} of "
            f"{self._unconfirmed_attempts} before it is refused)"
        )

    async def _drop_publisher(self) -> None:
        """Close the confirming channel; the next publish opens another. RabbitMQ may not
        answer the close of a channel with messages waiting at a stuck queue: after the
        timeout the whole connection goes, and the next publish connects again.
        """
        publisher, self._publisher, self._exchange = self._publisher, None, None
        if publisher is None or publisher.is_closed:
            return
        try:
            async with asyncio.timeout(self._timeout):
                await publisher.close()
            return
        except (*_TRANSIENT, RuntimeError):
            return
        except TimeoutError:
            pass
        connection, self._connection, self._declarer = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(*_TRANSIENT, RuntimeError):
                async with asyncio.timeout(self._timeout):
                    await connection.close()

    async def _publish_one(self, message: OutMessage) -> None:
        """Publish one message, not mandatory, and await its confirm."""
        channel = await self._publishing_channel()
        with _unavailable(self._shown, "publish"), _refusal(message):
            await channel.basic_publish(
                message.body.encode(),
                exchange=self._exchange_name,
                routing_key=message.topic,
                properties=amqp_properties(message),
                timeout=self._timeout,
            )

    async def _publishing_channel(self) -> aiormq.Channel:
        """The confirming channel (reopened after RabbitMQ closed it), as the AMQP client's
        own channel: the router hands it frames' properties as they are, with no message
        object per snapshot.
        """
        if self._publisher is None or self._publisher.is_closed or self._exchange is None:
            connection = await self._connect()
            with _unavailable(self._shown, "open a channel"):
                publisher = await connection.channel(publisher_confirms=True, on_return_raises=True)
                self._exchange = await publisher.declare_exchange(
                    self._exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
                )
            self._publisher = publisher
        with _unavailable(self._shown, "open a channel"):
            channel = await self._publisher.get_underlay_channel()
        assert isinstance(channel, aiormq.Channel)  # whose basic_publish takes wait=False
        return channel

    async def _declare(self, queue: str, topic: str, *, expires: bool = False) -> None:
        """Declare a durable queue bound to the exchange with ``topic``, once per process;
        raises ``_Refused`` when RabbitMQ will not, ``RouterUnavailable`` when it cannot.
        """
        if self._bound.get(queue) == topic:
            return
        async with self._declaring:
            channel = await self._declaring_channel()
            try:
                with _unavailable(self._shown, f"declare queue {queue!r}"):
                    declared = await channel.declare_queue(
                        queue,
                        durable=True,
                        arguments=self._shape.arguments(expires=expires),
                        timeout=self._timeout,
                    )
                    await declared.bind(
                        self._exchange_name, routing_key=topic, timeout=self._timeout
                    )
            except RouterUnavailable as exc:
                self._declarer = None
                if isinstance(exc.__cause__, _REFUSALS):
                    raise _Refused(f"queue {queue!r}: {exc.__cause__}") from exc
                raise
        self._bound[queue] = topic

    async def _declaring_channel(self) -> aio_pika.abc.AbstractChannel:
        if self._declarer is None or self._declarer.is_closed:
            connection = await self._connect()
            with _unavailable(self._shown, "open a channel"):
                self._declarer = await connection.channel(publisher_confirms=False)
        return self._declarer

    async def subscription_left(self, subscriber_id: str, topic: str, *, deleted: bool) -> None:
        """Delete the subscriber's queue (unsubscribed), or unbind it from the topic it left."""
        connection = await self._connect()
        self._bound.pop(subscriber_id, None)
        with _unavailable(self._shown, f"remove queue {subscriber_id!r}"):
            channel = await connection.channel(publisher_confirms=False)
            try:
                if deleted:
                    await channel.queue_delete(subscriber_id, timeout=self._timeout)
                else:
                    queue = await channel.get_queue(subscriber_id, ensure=False)
                    await queue.unbind(self._exchange_name, routing_key=topic)
            finally:
                if not channel.is_closed:
                    await channel.close()

    # -- reading ----------------------------------------------------------------------------

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
        await self._require(topic)
        queue = await self._queue_of(topic, group)
        deadline = asyncio.get_running_loop().time() + timeout
        connection = await self._connect()
        with _unavailable(self._shown, f"read queue {queue!r}"):
            channel = await connection.channel(publisher_confirms=False)
        try:
            with _unavailable(self._shown, f"read queue {queue!r}"):
                source = await channel.get_queue(queue, ensure=False)
                taken = await self._get(source, limit)
                if not taken and not self._held.over(deadline, gone):
                    taken = await self._wait(channel, source, topic, limit, deadline, gone)
        except BaseException:
            with contextlib.suppress(*_TRANSIENT, RuntimeError):
                await channel.close()
            raise
        if not taken:
            with contextlib.suppress(*_TRANSIENT, RuntimeError):
                await channel.close()
            return EmptyDelivery()
        return QueueDelivery(channel, taken)

    async def _get(
        self, queue: aio_pika.abc.AbstractQueue, limit: int
    ) -> list[aio_pika.abc.AbstractIncomingMessage]:
        taken: list[aio_pika.abc.AbstractIncomingMessage] = []
        while len(taken) < limit:
            message = await queue.get(no_ack=False, fail=False, timeout=self._timeout)
            if message is None:
                break
            taken.append(message)
        return taken

    async def _wait(
        self,
        channel: aio_pika.abc.AbstractChannel,
        queue: aio_pika.abc.AbstractQueue,
        topic: str,
        limit: int,
        deadline: float,
        gone: asyncio.Future[None] | None,
    ) -> list[aio_pika.abc.AbstractIncomingMessage]:
        """Consume the queue until a message arrives (or the read is over); the consumer is
        cancelled before returning, and what it was sent beyond ``limit`` goes back to the
        queue when the channel closes.
        """
        arrived: list[aio_pika.abc.AbstractIncomingMessage] = []
        first: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            arrived.append(message)
            if not first.done():
                first.set_result(None)

        await channel.set_qos(prefetch_count=limit, timeout=self._timeout)
        tag = await queue.consume(on_message, no_ack=False, timeout=self._timeout)
        try:
            waiter = self._held.waiter(None)
            await self._held.hold(None, waiter, deadline=deadline, gone=gone, until=first)
            await asyncio.sleep(0)  # messages already read off the socket join the first
        finally:
            if not channel.is_closed:
                with contextlib.suppress(*_TRANSIENT, RuntimeError):
                    await queue.cancel(tag, timeout=self._timeout)
        if gone is not None and gone.done():
            return []  # the channel's close hands them back
        return arrived[:limit]

    async def _require(self, topic: str) -> None:
        if topic not in self._topics:
            if await self._store.topics.get(topic) is None:
                raise NotFound("topic", topic)
            self._topics.add(topic)

    async def _queue_of(self, topic: str, group: str) -> str:
        """The subscriber's own queue when ``group`` is a subscription on ``topic``, else the
        group's queue, declared at its first read.
        """
        if await self._subscriber_topic(group) == topic:
            await self._declare(group, topic)
            return group
        name = group_queue(self._exchange_name, topic, group)
        try:
            await self._declare(name, topic, expires=True)
        except _Refused as exc:
            raise RouterUnavailable(f"RabbitMQ refused the group queue: {exc}") from exc
        self._group_queues.setdefault(topic, set()).add(name)
        return name

    async def _subscriber_topic(self, subscriber_id: str) -> str | None:
        async with self._store.read() as conn:
            result = await conn.execute(
                select(subscriptions.c.topic).where(subscriptions.c.subscriber_id == subscriber_id)
            )
            topic = result.scalar_one_or_none()
            return None if topic is None else str(topic)

    # -- topics -----------------------------------------------------------------------------

    async def topics(self) -> list[str]:
        return await self._store.topics.names()

    async def stats(self, topic: str) -> TopicStats:
        row = await self._store.topics.get(topic)
        if row is None:
            raise NotFound("topic", topic)
        async with self._store.read() as conn:
            result = await conn.execute(
                select(subscriptions.c.subscriber_id).where(subscriptions.c.topic == topic)
            )
            queues = sorted(set(result.scalars()) | self._group_queues.get(topic, set()))
        counts, _ = await self._count(queues)
        last = max(row.last_published_at or 0, self._last_published.get(topic, 0)) or None
        lagging = any(c.messages > 0 for c in counts.values())
        return TopicStats(
            name=topic,
            messages=max((c.messages for c in counts.values()), default=0),
            last_published_at=last,
            oldest_unread_at=last if lagging else None,
            consumer_groups=[
                GroupStats(q, 0, counts[q].messages, None, counts[q].consumers)
                for q in queues
                if q in counts
            ],
        )

    async def lags(self, topics: Sequence[str]) -> dict[str, int]:
        """As :meth:`stats` says per topic, for many topics at once: one read of the
        subscriptions, then every queue of those topics read ``COUNT_CONCURRENCY`` at a time
        within ``LAG_BUDGET_SECONDS`` (a topic with a queue not read by then is left out).
        """
        known = set(await self._store.topics.names()).intersection(topics)
        if not known:
            return {}
        topic_of = await self._subscription_queues(known)
        counts, unread = await self._count(sorted(topic_of), budget=LAG_BUDGET_SECONDS)
        lags = dict.fromkeys(known, 0)
        for queue, queue_counts in counts.items():
            topic = topic_of[queue]
            lags[topic] = max(lags[topic], queue_counts.messages)
        for queue in unread:
            lags.pop(topic_of[queue], None)
        if unread:
            log.warning(
                "consumer lag of %d of %d RabbitMQ queues not read within %g s",
                len(unread),
                len(topic_of),
                LAG_BUDGET_SECONDS,
            )
        return lags

    async def queue_summary(self) -> QueueSummary:
        """Figures over every subscription's queue and the group queues made here, read at most
        every ``SUMMARY_MAX_AGE_SECONDS`` (within ``LAG_BUDGET_SECONDS``) by one task at a
        time: a caller that gives up waiting leaves the read going for the next one.
        """
        summary = self._summary
        if summary is not None and now_ms() - summary.read_at < SUMMARY_MAX_AGE_SECONDS * 1000:
            return summary
        if self._summarising is None or self._summarising.done():
            self._summarising = asyncio.create_task(self._summarise())
            self._summarising.add_done_callback(_retrieve)
        return await asyncio.shield(self._summarising)

    async def _summarise(self) -> QueueSummary:
        topic_of = await self._subscription_queues(None)
        counts, unread = await self._count(sorted(topic_of), budget=LAG_BUDGET_SECONDS)
        summary = QueueSummary(
            queues=len(counts),
            messages=sum(c.messages for c in counts.values()),
            consumers=sum(c.consumers for c in counts.values()),
            without_consumers=sum(1 for c in counts.values() if not c.consumers),
            read_at=now_ms(),
            complete=not unread,
        )
        self._summary = summary
        return summary

    async def _subscription_queues(self, topics: set[str] | None) -> dict[str, str]:
        """Queue -> topic: the subscriptions' queues, and the group queues made here, of
        ``topics`` (None: of every topic).
        """
        async with self._store.read() as conn:
            result = await conn.execute(
                select(subscriptions.c.subscriber_id, subscriptions.c.topic)
            )
            topic_of = {
                str(queue): str(topic)
                for queue, topic in result
                if topics is None or topic in topics
            }
        for topic, queues in self._group_queues.items():
            if topics is None or topic in topics:
                topic_of.update(dict.fromkeys(queues, topic))
        return topic_of

    async def queue_counts(self, queues: Iterable[str]) -> dict[str, QueueCounts]:
        """Ready messages and consumers of each of ``queues`` that exists."""
        counts, _ = await self._count(list(queues))
        return counts

    async def _count(
        self, queues: list[str], *, budget: float | None = None
    ) -> tuple[dict[str, QueueCounts], list[str]]:
        """The counts of each queue that exists (a passive ``queue.declare`` each, at most
        ``COUNT_CONCURRENCY`` in flight, a channel each), and the queues not read within
        ``budget`` seconds. Raises ``RouterUnavailable`` when RabbitMQ does not answer.

        A reader is never cancelled in the middle of a request: the AMQP client then reuses
        the channel number of an open it gave up, and RabbitMQ closes the whole connection,
        publishing included. Once the budget is spent (or the caller gave up), the readers
        take no further queue and end after the request in hand.
        """
        if not queues:
            return {}, []
        connection = await self._counting_connection()
        counts: dict[str, QueueCounts] = {}
        read: set[str] = set()
        waiting = iter(queues)
        stopped = asyncio.Event()

        async def reader() -> None:
            channel: aio_pika.abc.AbstractChannel | None = None
            try:
                for queue in waiting:
                    if stopped.is_set():
                        return
                    with _unavailable(self._shown, "read queue counts"):
                        if channel is None or channel.is_closed:
                            channel = await connection.channel(
                                self._count_channel_number(connection), publisher_confirms=False
                            )
                        try:
                            declared = await channel.declare_queue(
                                queue, passive=True, timeout=self._timeout
                            )
                        except aiormq.exceptions.ChannelNotFoundEntity:
                            read.add(queue)  # not made yet: its first snapshot is on the way
                            continue
                    result = declared.declaration_result
                    counts[queue] = QueueCounts(
                        int(result.message_count or 0), int(result.consumer_count or 0)
                    )
                    read.add(queue)
            finally:
                if channel is not None and not channel.is_closed:
                    with contextlib.suppress(*_TRANSIENT, RuntimeError):
                        await channel.close()

        readers = [
            asyncio.create_task(reader()) for _ in range(min(COUNT_CONCURRENCY, len(queues)))
        ]
        for task in readers:
            task.add_done_callback(_retrieve)
        try:
            done, _ = await asyncio.wait(
                readers, timeout=budget, return_when=asyncio.FIRST_EXCEPTION
            )
        finally:
            stopped.set()
        for task in done:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error
        return dict(counts), [q for q in queues if q not in read]

    def _count_channel_number(self, connection: aio_pika.abc.AbstractConnection) -> int:
        """A channel number for a queue-count reader, taken in turn from all the connection
        allows: a passive declare of a missing queue makes RabbitMQ close its channel, and the
        AMQP client, left to choose, may open the next channel under that number before
        RabbitMQ saw it closed ("second 'channel.open' seen", and the connection is closed).
        """
        amqp = connection.transport.connection  # type: ignore[union-attr]
        span = min(COUNT_CHANNELS, int(amqp.connection_tune.channel_max or COUNT_CHANNELS))
        for _ in range(span):
            self._count_channel = self._count_channel % span + 1
            if self._count_channel not in amqp.channels:
                return self._count_channel
        raise RouterUnavailable(f"RabbitMQ at {self._shown}: no free channel to read counts")

    async def _counting_connection(self) -> aio_pika.abc.AbstractConnection:
        """The connection queue counts are read on, made on first use and after a loss."""
        async with self._counter_connecting:
            if self._counter is None or not _alive(self._counter):
                with _unavailable(self._shown, "connect to read queue counts"):
                    self._counter = await aio_pika.connect(
                        self._url,
                        timeout=self._timeout,
                        ssl_context=self._ssl,
                        client_properties={"connection_name": "policy-pubsub queue counts"},
                    )
            return self._counter

    async def ping(self) -> None:
        connection = await self._connect()
        with _unavailable(self._shown, "ping"):
            channel = await connection.channel(publisher_confirms=False)
            try:
                await channel.get_exchange(self._exchange_name, ensure=True)
            finally:
                if not channel.is_closed:
                    await channel.close()


def _alive(connection: aio_pika.abc.AbstractConnection) -> bool:
    """Whether a connection is usable: aio-pika's ``is_closed`` stays false when RabbitMQ
    closed the connection (e.g. with 504 after a channel error), only the AMQP client's own
    connection under it says so.
    """
    transport = connection.transport
    return not connection.is_closed and transport is not None and not transport.connection.is_closed


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Retrieve a finished task's error, so asyncio does not report it when nobody waited."""
    if not task.cancelled():
        task.exception()


@contextlib.contextmanager
def _refusal(message: OutMessage) -> Iterator[None]:
    """A channel closed for good at this message becomes ``_Refused(reason, message)``."""
    try:
        yield
    except _REFUSALS as exc:
        raise _Refused(str(exc), message) from exc


def _ssl_context(ca_file: str | None) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"amqp_ca_file {ca_file!r} is not a readable PEM file: {exc}") from exc


def _without_password(url: str) -> str:
    """The URL for logs: ``amqp://user@host:5672/vhost``."""
    scheme, _, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}@{host}"


__all__ = ["COUNT_CONCURRENCY", "AmqpRouter", "QueueCounts", "QueueDelivery"]
