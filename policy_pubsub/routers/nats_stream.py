"""The NATS router's JetStream stream: its configuration and the queries made on it.

Every query reads one topic through its subject filter (``<stream>.t.<topic>.>``) and names
messages by stream sequence. Callers pass the JetStream context and translate errors.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RawStreamMsg,
    RePublish,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.nuid import NUID

from policy_pubsub.routers.nats_subjects import KIND_DEDUP, KIND_UNIQUE, Subjects
from policy_pubsub.store import OutMessage

log = logging.getLogger(__name__)

#: How long a counting consumer lives if its deletion is lost.
COUNTER_TTL_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class TopicSummary:
    """What the stream retains of one topic, measured against consumer group positions."""

    messages: int
    last_published_at: int | None
    oldest_after: int | None  # publish time of the oldest message after the furthest position
    lags: dict[str, int]


def epoch_ms(msg: RawStreamMsg) -> int | None:
    return None if msg.time is None else int(msg.time.timestamp() * 1000)


class TopicStream:
    """One deployment's stream of topics."""

    def __init__(
        self, subjects: Subjects, *, max_age: float, duplicate_window: float, replicas: int
    ) -> None:
        self.subjects = subjects
        self.name = subjects.stream
        self._max_age = max_age
        self._duplicate_window = min(duplicate_window, max_age)
        self._replicas = replicas
        # A direct get may be answered by a lagging follower of a replicated stream.
        self._direct = replicas == 1
        self._nuid = NUID()

    def config(self) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            description="policy-pubsub topics (DMaaP semantics over JetStream)",
            subjects=[self.subjects.stream_subjects],
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD,
            max_msgs_per_subject=1,
            max_age=self._max_age,
            duplicate_window=self._duplicate_window,
            storage=StorageType.FILE,
            num_replicas=self._replicas,
            allow_direct=True,
            republish=RePublish(
                src=self.subjects.stream_subjects,
                dest=self.subjects.wake_subjects,
                headers_only=True,
            ),
        )

    async def ensure(self, js: JetStreamContext) -> None:
        """Create the stream, or bring an existing one to this configuration."""
        wanted = self.config()
        try:
            have = (await js.stream_info(self.name)).config
        except nats.js.errors.NotFoundError:
            await js.add_stream(wanted)
            log.info("created JetStream stream %s", self.name)
            return
        if (
            have.subjects != wanted.subjects
            or have.max_msgs_per_subject != wanted.max_msgs_per_subject
            or have.max_age != wanted.max_age
            or have.duplicate_window != wanted.duplicate_window
            or not have.allow_direct
            or have.republish != wanted.republish
        ):
            await js.update_stream(wanted)
            log.info("updated JetStream stream %s to this server's settings", self.name)

    def subject_of(self, message: OutMessage) -> str:
        """A snapshot's subject is its subscriber's; any other message gets one of its own."""
        if message.key is not None:
            return self.subjects.snapshot(message.topic, message.key)
        if message.dedup_id is not None:
            digest = hashlib.sha256(message.dedup_id.encode()).hexdigest()[:40]
            return self.subjects.message(message.topic, KIND_DEDUP, digest)
        return self.subjects.message(message.topic, KIND_UNIQUE, self._nuid.next().decode())

    async def next_after(self, js: JetStreamContext, topic: str, after: int) -> RawStreamMsg | None:
        """The topic's first retained message after stream sequence ``after``."""
        try:
            return await js.get_msg(
                self.name,
                seq=after + 1,
                subject=self.subjects.topic_filter(topic),
                next=True,
                direct=self._direct,
            )
        except nats.js.errors.NotFoundError:
            return None

    async def fetch(
        self, js: JetStreamContext, topic: str, after: int, limit: int
    ) -> list[tuple[int, str]]:
        """Up to ``limit`` (sequence, body) of the topic after ``after``, in order."""
        rows: list[tuple[int, str]] = []
        while len(rows) < limit:
            msg = await self.next_after(js, topic, rows[-1][0] if rows else after)
            if msg is None or msg.seq is None:
                break
            rows.append((msg.seq, (msg.data or b"").decode()))
        return rows

    async def last(self, js: JetStreamContext, topic: str) -> RawStreamMsg | None:
        try:
            return await js.get_msg(
                self.name, subject=self.subjects.topic_filter(topic), direct=self._direct
            )
        except nats.js.errors.NotFoundError:
            return None

    async def count_after(self, js: JetStreamContext, topic: str, after: int) -> int:
        """How many retained messages of the topic come after stream sequence ``after``: the
        pending count of a short-lived consumer, which the server computes from its index.
        """
        info = await js.add_consumer(
            self.name,
            ConsumerConfig(
                filter_subject=self.subjects.topic_filter(topic),
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=after + 1,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=COUNTER_TTL_SECONDS,
                mem_storage=True,
            ),
        )
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await js.delete_consumer(self.name, info.name)
        return info.num_pending or 0

    async def summary(
        self, js: JetStreamContext, topic: str, positions: dict[str, int]
    ) -> TopicSummary:
        """Retained messages, newest publish time, and each group's lag behind the topic."""
        last = await self.last(js, topic)
        head = 0 if last is None or last.seq is None else last.seq
        total = await self.count_after(js, topic, 0) if head else 0
        furthest = max(positions.values(), default=0)
        oldest = await self.next_after(js, topic, furthest) if head > furthest else None
        lags: dict[str, int] = {}
        for name, position in positions.items():
            if position >= head:
                lags[name] = 0
            elif position == 0:
                lags[name] = total
            else:
                lags[name] = await self.count_after(js, topic, position)
        return TopicSummary(
            messages=total,
            last_published_at=None if last is None else epoch_ms(last),
            oldest_after=None if oldest is None else epoch_ms(oldest),
            lags=lags,
        )
