"""The NATS router's JetStream stream: its configuration, the queries made on it, and the
pipelined publisher that writes to it.

Every query reads one topic through its subject filter (``<stream>.t.<topic>.>``) and names
messages by stream sequence. Callers pass the JetStream context and translate errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
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

from policy_pubsub.routers.messages import OutMessage
from policy_pubsub.routers.nats_subjects import KIND_DEDUP, KIND_UNIQUE, Subjects

log = logging.getLogger(__name__)

#: How long a counting consumer lives if its deletion is lost.
COUNTER_TTL_SECONDS = 30.0

MSG_ID_HEADER = "Nats-Msg-Id"


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


class Refused(Exception):
    """JetStream answered a publish with an error, or no stream took the subject.

    ``permanent``: no retry of the message at ``index`` (of the batch given to
    :meth:`Publisher.publish`) can succeed, and every message before it was stored.
    """

    def __init__(self, reason: str, index: int | None = None, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.index = index
        self.permanent = permanent


#: JetStream API errors (``err_code``) that refuse the message itself, for good:
#: 10054 JSStreamMessageExceedsMaximumErr, over the stream's max_msg_size (or the server's
#: max_payload). Storage full, no responders, timeouts and the like may pass with time.
PERMANENT_ERR_CODES = frozenset({10054})


def _refusal(data: bytes) -> tuple[str, bool] | None:
    """Why a JetStream publish acknowledgement is not a success, and whether no retry can
    cure it; None for a success (a stored message, or a duplicate JetStream already holds).
    """
    # The server writes {"stream":...,"seq":...[,"duplicate":true]} for a success and
    # {"error":{...}} for a refusal; only the unusual is parsed.
    if data.startswith(b'{"stream":') and b'"seq":' in data and b'"error":' not in data:
        return None
    if not data:
        return "no stream answered (no responders)", False
    try:
        answer = json.loads(data)
    except ValueError:
        return f"not a JetStream acknowledgement: {data[:200]!r}", False
    if not isinstance(answer, dict):
        return f"not a JetStream acknowledgement: {data[:200]!r}", False
    if "error" in answer:
        error = answer["error"]
        code = error.get("err_code") if isinstance(error, dict) else None
        return f"JetStream refused a message: {error}", code in PERMANENT_ERR_CODES
    if "seq" not in answer:
        return f"not a JetStream acknowledgement: {data[:200]!r}", False
    return None


class _Window:
    """The acknowledgements one publish call waits for, by message index."""

    __slots__ = ("done", "failed_at", "failure", "missing", "permanent", "waiting")

    def __init__(self, size: int, done: asyncio.Future[None]) -> None:
        self.waiting = bytearray(b"\x01") * size
        self.missing = size
        self.failure: str | None = None
        self.failed_at: int | None = None
        self.permanent = False
        self.done = done

    def answer(self, index: int, data: bytes) -> None:
        if not 0 <= index < len(self.waiting) or not self.waiting[index] or self.done.done():
            return
        self.waiting[index] = 0
        refusal = _refusal(data)
        if refusal is not None:
            self.fail(index, *refusal)
            return
        self.missing -= 1
        if not self.missing:
            self.done.set_result(None)

    def fail(self, index: int, reason: str, permanent: bool) -> None:
        """The first refusal, of the message at ``index``: permanent only when every message
        before it was stored (acknowledged before it), so the caller may go on after it.
        """
        self.failure, self.failed_at = reason, index
        self.permanent = permanent and not any(self.waiting[:index])
        if not self.done.done():
            self.done.set_result(None)

    def unsent(self, index: int) -> None:
        """The messages from ``index`` on were never sent: no answer will come for them."""
        self.missing -= sum(self.waiting[index:])
        self.waiting[index:] = bytes(len(self.waiting) - index)
        if not self.missing and not self.done.done():
            self.done.set_result(None)


class Publisher:
    """Publishes batches into the stream, pipelined on one connection.

    Each message goes out on core NATS with a reply subject of this publisher,
    ``<inbox>.<window>.<index>``, where JetStream answers once it stored the message (or
    refused it); one subscription collects every answer. A message costs one publish and one
    callback, with no future of its own (nats-py's ``publish_async`` makes one, and a task
    besides when given ``wait_stall``), and nothing between two publishes yields to the event
    loop, so the client writes the batch to the socket in a few large writes rather than one
    per message. The server stores the messages of one connection in the order they were sent.

    ``publish`` returns once JetStream acknowledged every message of the batch, and raises
    :class:`Refused` at the first refusal and ``TimeoutError`` when no acknowledgement came for
    ``timeout`` seconds. Several calls may run at once; each waits for its own messages only.
    A refusal is ``permanent`` for a message over the server's max_payload (the client does
    not send it, nor any after it) and for a JetStream error no retry cures
    (``PERMANENT_ERR_CODES``), once the messages before it were acknowledged. Messages sent
    after such a message may have been stored too; the relay sends them again, and JetStream
    drops the copies by their ``Nats-Msg-Id``.
    """

    def __init__(self, stream: TopicStream) -> None:
        self._stream = stream
        self._nc: Client | None = None
        self._prefix = ""
        self._windows: dict[str, _Window] = {}
        self._ids = itertools.count()

    async def start(self, nc: Client) -> None:
        """Subscribe to the acknowledgements (nats-py subscribes again after a reconnect)."""
        self._nc = nc
        self._prefix = f"{nc.new_inbox()}."
        await nc.subscribe(f"{self._prefix}*.*", cb=self._on_answer)

    async def _on_answer(self, msg: Msg) -> None:
        window_id, _, index = msg.subject[len(self._prefix) :].partition(".")
        window = self._windows.get(window_id)
        if window is not None:
            with contextlib.suppress(ValueError):
                window.answer(int(index), msg.data)

    async def publish(self, messages: Sequence[OutMessage], timeout: float) -> None:
        nc = self._nc
        if nc is None:
            raise RuntimeError("the publisher is not started")
        if not messages:
            return
        window_id = str(next(self._ids))
        window = _Window(len(messages), asyncio.get_running_loop().create_future())
        self._windows[window_id] = window
        reply = f"{self._prefix}{window_id}."
        subject_of = self._stream.subject_of
        oversize: int | None = None
        try:
            async with asyncio.timeout(timeout):
                for index, message in enumerate(messages):
                    if window.done.done():
                        break  # refused: the rest would be sent in vain
                    headers = None
                    if message.dedup_id is not None:
                        headers = {MSG_ID_HEADER: message.dedup_id}
                    try:
                        await nc.publish(
                            subject_of(message),
                            message.body.encode(),
                            reply=f"{reply}{index}",
                            headers=headers,
                        )
                    except nats.errors.MaxPayloadError:
                        oversize = index  # the client refuses it: nothing after it is sent
                        window.unsent(index)
                        break
            while not window.done.done():
                missing = window.missing
                await asyncio.wait((window.done,), timeout=timeout)
                if not window.done.done() and window.missing == missing:
                    raise TimeoutError(
                        f"JetStream acknowledged no message for {timeout} s "
                        f"({missing} of {len(messages)} waiting)"
                    )
        finally:
            del self._windows[window_id]
        if window.failure is not None:
            raise Refused(window.failure, window.failed_at, permanent=window.permanent)
        if oversize is not None:
            raise Refused(
                f"the message is larger than the server's max_payload of {nc.max_payload} bytes",
                oversize,
                permanent=True,
            )
