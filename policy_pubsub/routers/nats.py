"""The NATS JetStream router: ``--router nats://host:4222``.

One stream per deployment (``Settings.nats_stream``) holds every topic; the subjects are drawn
in :mod:`policy_pubsub.routers.nats_subjects`. The stream is configured for this data:

- ``max_msgs_per_subject=1`` and one subject per (topic, subscriber) for snapshots, so
  JetStream itself keeps only each subscriber's newest snapshot. A message without key gets a
  subject of its own (a hash of its de-duplication id, else a NUID), so the same limit never
  drops it: one stream, not a second one for raw messages, because the stream sequence is then
  the publish order of a topic across both kinds, and one wildcard reads a topic in order.
- ``max_age`` is the retention (7 days unless ``nats_max_age_seconds`` says otherwise);
  ``Nats-Msg-Id`` is the message's ``dedup_id``, so the outbox relay's re-sends within the
  ``duplicate_window`` are dropped; file storage; ``allow_direct`` for direct gets.
- ``republish`` (headers only) copies every *stored* message's headers to ``<stream>.w.>``
  on core NATS. Each replica subscribes there once and wakes the reads it holds on the topic
  (:class:`~policy_pubsub.routers.holding.HeldReads`); nothing polls. RePublish
  rather than a core subscription to the stream subjects: it fires after the message is stored,
  so a woken reader always finds it, it covers every publisher, and replicas receive headers,
  not snapshot bodies.

Reading: consumer groups are read *by sequence*, not through a durable consumer each. A group's
position is the stream sequence of the last message it consumed, kept in the store's
``consumer_groups`` table and cached by each replica (:mod:`.positions`); a read takes the
messages after it with direct gets filtered on the topic's subjects (one get per message, and
one that finds nothing). Measured with ``python bench/nats_consumers.py`` (nats-server 2.9.10,
2 vCPU Xeon), one group per topic:

    groups  strategy       create all  server RSS  server restart  read p50 (p99)
    1,000   durable        1.07 s      +40 MB      0.42 s          1.16 ms (3.8)
    1,000   by sequence    -           +1.4 MB     0.01 s          0.54 ms (2.1)
    5,000   durable        8.6 s       +202 MB     5.4 s           1.89 ms (8.8)
    5,000   by sequence    -           +1.4 MB     0.02 s          1.19 ms (5.7)

A durable consumer costs about 40 KB of server memory and start-up work per group, growing
with the number of components; by sequence the server holds nothing per group and reads are
faster. The DMaaP rule that an unacknowledged read consumes nothing is also a plain
position that does not move, where a consumer needs naks and redelivery. A short-lived
consumer per read (the bench's ``ephemeral`` row, 1.9 ms p50 at 1,000) is slower than direct
gets, so consumers are used only to count messages for ``stats``.

Topics are recorded in the store's ``topics`` table at their first publish, so every replica
lists them and a topic whose messages all expired still exists, as with the embedded router.
A publish is pipelined on one connection (stored in the order sent; see
:class:`~policy_pubsub.routers.nats_stream.Publisher`) and returns once JetStream acknowledged
every message. It raises ``RouterUnavailable`` at once while the connection is down, at the
first message JetStream refuses, and when no acknowledgement came for ``request_timeout``;
other calls raise it at once or within ``request_timeout``. nats-py reconnects for
ever; after a reconnect held reads look again and positions are re-read from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Sequence

import nats.errors
from nats.aio.client import DEFAULT_MAX_PAYLOAD_SIZE, Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import StreamConfig

from policy_pubsub.exceptions import MessageRefused, NotFound, RouterUnavailable
from policy_pubsub.routers.base import Delivery, EmptyDelivery, GroupStats, Router, TopicStats
from policy_pubsub.routers.holding import HeldReads
from policy_pubsub.routers.messages import OutMessage
from policy_pubsub.routers.nats_stream import Publisher, Refused, TopicStream
from policy_pubsub.routers.nats_subjects import Subjects
from policy_pubsub.routers.positions import GroupDelivery, GroupState, Positions
from policy_pubsub.store import Store, now_ms

log = logging.getLogger(__name__)

DEFAULT_STREAM = "POLICY_PUBSUB"

#: Bytes of a message's max_payload left for its headers: the server counts them with the
#: body, and ``Nats-Msg-Id`` (a subscriber id of up to 255 characters and a revision) with the
#: header block's framing stays well under this.
HEADER_ALLOWANCE = 1024
# The most subjects JetStream details in one stream info answer (it pages beyond).
SUBJECTS_PAGE = 100_000
# The header of a RePublish copy that carries the stored message's stream sequence.
SEQUENCE_HEADER = "Nats-Sequence"


@contextlib.contextmanager
def _unavailable(action: str) -> Iterator[None]:
    """Translate the NATS client's errors into ``RouterUnavailable`` at the boundary."""
    try:
        yield
    except (nats.errors.Error, TimeoutError, OSError) as exc:
        raise RouterUnavailable(f"NATS JetStream: {action} failed: {exc!r}") from exc


class NatsRouter(Router):
    """DMaaP-style topics in one JetStream stream; group positions in the store."""

    def __init__(
        self,
        url: str,
        store: Store,
        *,
        stream: str = DEFAULT_STREAM,
        max_age_seconds: float,
        position_flush_seconds: float,
        duplicate_window_seconds: float = 120.0,
        replicas: int = 1,
        request_timeout: float = 5.0,
        reconnect_wait: float = 0.5,
    ) -> None:
        self._url = url
        self._store = store
        self._subjects = Subjects(stream)
        self._stream = TopicStream(
            self._subjects,
            max_age=max_age_seconds,
            duplicate_window=duplicate_window_seconds,
            replicas=replicas,
        )
        self._publisher = Publisher(self._stream)
        self._timeout = request_timeout
        self._reconnect_wait = reconnect_wait
        self._positions = Positions(store, flush_seconds=position_flush_seconds)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._topics: set[str] = set()
        self._held = HeldReads()
        # topic -> stream sequence of its newest message stored since the last (re)connect,
        # from the RePublish wake-ups (their Nats-Sequence header); read by lags().
        self._stored: dict[str, int] = {}
        self._closed = False

    @property
    def max_message_bytes(self) -> int:
        """The server's ``max_payload`` (as it announced on connecting; NATS's default of
        1 MiB before) less :data:`HEADER_ALLOWANCE`.
        """
        payload = DEFAULT_MAX_PAYLOAD_SIZE if self._nc is None else self._nc.max_payload
        return payload - HEADER_ALLOWANCE

    @property
    def held_reads(self) -> int:
        return self._held.count

    # -- life cycle -------------------------------------------------------------------------

    def stream_config(self) -> StreamConfig:
        """The stream this router needs; created, or updated to it, at start."""
        return self._stream.config()

    async def start(self) -> None:
        self._held.start()
        self._topics = set(await self._store.topics.names())
        nc = Client()
        try:
            # Reconnect for ever; only the first connection is bounded, by the request timeout.
            await asyncio.wait_for(
                nc.connect(
                    self._url,
                    name="policy-pubsub",
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=self._reconnect_wait,  # type: ignore[arg-type]
                    connect_timeout=max(1, int(self._timeout)),
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                ),
                self._timeout,
            )
            self._nc = nc
            self._js = nc.jetstream(timeout=self._timeout)
            await self._stream.ensure(self._js)
            await self._publisher.start(nc)
            await nc.subscribe(self._subjects.wake_subjects, cb=self._on_stored)
            await nc.subscribe(self._subjects.position_subjects, cb=self._on_position)
            await nc.flush(timeout=max(1, int(self._timeout)))
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            await nc.close()
            self._nc = self._js = None
            message = f"cannot start the NATS router on {self._url}: {exc!r}"
            raise RouterUnavailable(message) from exc
        await self._positions.load()  # on a store this process alone uses
        self._positions.start()

    async def drain(self) -> None:
        self._held.drain()

    async def close(self) -> None:
        await self.drain()
        await self._positions.close()
        if self._nc is not None:
            self._closed = True
            try:
                await self._nc.close()
            except (OSError, nats.errors.Error) as exc:
                # Closing while NATS is away: nothing is left to flush; the socket is gone.
                log.info("NATS connection closed while disconnected: %r", exc)
            self._nc = self._js = None

    @property
    def stream(self) -> str:
        """The name of the JetStream stream that holds the topics."""
        return self._stream.name

    @property
    def connected(self) -> bool:
        """Whether the connection to NATS is up (false while reconnecting)."""
        return self._nc is not None and self._nc.is_connected

    def _jetstream(self) -> JetStreamContext:
        """The JetStream context, or ``RouterUnavailable`` at once while not connected."""
        if self._js is None or not self.connected:
            raise RouterUnavailable(f"not connected to NATS at {self._url}")
        return self._js

    async def _on_error(self, exc: Exception) -> None:
        log.warning("NATS connection: %r", exc)

    async def _on_disconnected(self) -> None:
        if not self._closed:
            log.warning("disconnected from NATS at %s; reconnecting", self._url)

    async def _on_reconnected(self) -> None:
        log.info("reconnected to NATS")
        # What was announced while we were away is lost: positions are read from the store
        # again, and every held read looks again.
        self._positions.mark_stale()
        self._stored.clear()  # wake-ups may have been missed meanwhile
        self._held.wake_all()

    async def _on_stored(self, msg: Msg) -> None:
        topic = self._subjects.topic_of_wake(msg.subject)
        if topic is not None:
            sequence = (msg.headers or {}).get(SEQUENCE_HEADER, "")
            if sequence.isdigit():
                self._stored[topic] = max(int(sequence), self._stored.get(topic, 0))
            self._held.wake((topic,))

    async def _on_position(self, msg: Msg) -> None:
        key = self._subjects.group_of_position(msg.subject)
        try:
            position, at = (int(part) for part in msg.data.split())
        except ValueError:
            return
        if key is not None:
            self._positions.merge(*key, position, at)

    # -- writing ----------------------------------------------------------------------------

    async def publish(self, batch: Sequence[OutMessage]) -> None:
        if not batch:
            return
        self._jetstream()  # RouterUnavailable at once while not connected
        await self._register(list(dict.fromkeys(m.topic for m in batch)))
        try:
            with _unavailable("publish"):
                await self._publisher.publish(batch, self._timeout)
        except Refused as exc:
            if exc.permanent and exc.index is not None:
                raise MessageRefused(batch[exc.index], str(exc)) from exc
            raise RouterUnavailable(str(exc)) from exc

    async def _register(self, topics: list[str]) -> None:
        """Record new topics in the store, where every replica sees them and where they stay
        when their messages expire, as the embedded router's do.
        """
        new = [t for t in topics if t not in self._topics]
        if new:
            async with self._store.write() as tx:
                await tx.create_topics(new, now_ms())
            self._topics.update(new)

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
        state = await self._positions.get(topic, group)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            # Taken before looking, so a message stored while we look still wakes us.
            waiter = self._held.waiter(topic)
            try:
                delivery = await self._take(state, limit)
                if delivery is not None:
                    return delivery
                if self._held.over(deadline, gone):
                    return EmptyDelivery()
                if not await self._held.hold(topic, waiter, deadline=deadline, gone=gone):
                    return EmptyDelivery()
            finally:
                self._held.discard(topic, waiter)

    async def _require(self, topic: str) -> None:
        if topic not in self._topics:
            if await self._store.topics.get(topic) is None:
                raise NotFound("topic", topic)
            self._topics.add(topic)

    async def _take(self, state: GroupState, limit: int) -> Delivery | None:
        await state.lock.acquire()
        try:
            js = self._jetstream()
            with _unavailable("read"):
                rows = await self._stream.fetch(js, state.topic, state.position, limit)
        except BaseException:
            state.lock.release()
            raise
        if rows:
            return GroupDelivery(self._advance, state, rows)
        state.lock.release()
        return None

    async def _advance(self, state: GroupState, position: int) -> None:
        at = await self._positions.advance(state, position)
        if self._nc is not None and self.connected:
            # Tell the other replicas now; the store has it within a flush.
            with contextlib.suppress(nats.errors.Error, OSError):
                subject = self._subjects.position(state.topic, state.name)
                await self._nc.publish(subject, f"{state.position} {at}".encode())

    # -- topics -----------------------------------------------------------------------------

    async def topics(self) -> list[str]:
        return await self._store.topics.names()

    async def stats(self, topic: str) -> TopicStats:
        details = await self._store.topics.details(topic)
        if details is None:
            raise NotFound("topic", topic)
        groups = {g.name: (g.position, g.last_consumed_at) for g in details[2]}
        for state in self._positions.of_topic(topic):
            if state.position >= groups.get(state.name, (0, None))[0]:
                groups[state.name] = (state.position, state.last_consumed_at)
        js = self._jetstream()
        with _unavailable("stats"):
            summary = await self._stream.summary(
                js, topic, {name: position for name, (position, _) in groups.items()}
            )
        return TopicStats(
            name=topic,
            messages=summary.messages,
            last_published_at=summary.last_published_at,
            oldest_unread_at=summary.oldest_after,
            consumer_groups=[
                GroupStats(name, position, summary.lags[name], at)
                for name, (position, at) in sorted(groups.items())
            ],
        )

    async def lags(self, topics: Sequence[str]) -> dict[str, int]:
        """In bulk as far as JetStream allows: one stream info with its per-subject counts
        gives every topic's retained messages (the lag of a topic nobody has read, or whose
        slowest group is at 0), and a group at or past the topic's newest sequence seen in a
        wake-up has lag 0. Only the topics left (a group part-way through, or no wake-up for
        the topic since this process connected) cost a per-topic :meth:`stats`, with a
        counting consumer per group. Falls back to that for all when the stream holds more
        subjects than one answer details (``SUBJECTS_PAGE``).
        """
        wanted = set(topics) & set(await self._store.topics.names())
        positions: dict[str, dict[str, int]] = {}
        for row in await self._store.positions.all_groups():
            if row.topic in wanted:
                positions.setdefault(row.topic, {})[row.name] = row.position
        for state in self._positions.states():
            if state.topic in wanted:
                known = positions.setdefault(state.topic, {})
                known[state.name] = max(state.position, known.get(state.name, 0))
        js = self._jetstream()
        with _unavailable("stats"):
            info = await js.stream_info(self._stream.name, self._subjects.stream_subjects)
        subjects = info.state.subjects or {}
        if len(subjects) >= SUBJECTS_PAGE:
            return await super().lags(sorted(wanted))
        totals: dict[str, int] = {}
        for subject, count in subjects.items():
            topic = self._subjects.topic_of_message(subject)
            if topic in wanted:
                totals[topic] = totals.get(topic, 0) + count
        lags: dict[str, int] = {}
        rest: list[str] = []
        for topic in wanted:
            groups = positions.get(topic)
            slowest = min(groups.values()) if groups else 0
            total = totals.get(topic, 0)
            if slowest == 0 or total == 0:
                lags[topic] = total
            elif slowest >= self._stored.get(topic, slowest + 1):
                lags[topic] = 0
            else:
                rest.append(topic)
        if rest:
            lags.update(await super().lags(sorted(rest)))
        return lags

    async def ping(self) -> None:
        js = self._jetstream()
        with _unavailable("ping"):
            await js.stream_info(self._stream.name)
