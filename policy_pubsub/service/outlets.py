"""Where a change's snapshots go: one outlet, chosen once when the server is wired.

Either way the snapshots are written in the transaction of the change that causes them, so
that a change is acknowledged only with its snapshots durable:

- :class:`InStoreOutlet` (the embedded router): appended to the topics in the store; after
  the commit the router's held reads on those topics are woken.
- :class:`OutboxOutlet` (a router outside the store: NATS, DMaaP): written to the outbox;
  after the commit the relay is woken to publish them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from policy_pubsub.relay import OutboxRelay
from policy_pubsub.routers import OutMessage, Router
from policy_pubsub.routers.embedded import EmbeddedRouter
from policy_pubsub.store import Store, WriteTx, now_ms

__all__ = ["InStoreOutlet", "OutboxOutlet", "Outlet", "Written", "outlet_for"]


@dataclass(frozen=True, slots=True)
class Written:
    """What an outlet wrote in a transaction, for it to hand on once that committed."""

    messages: Sequence[OutMessage]
    #: Each topic's new last offset, for messages appended to topics in the store.
    heads: Mapping[str, int] = field(default_factory=dict)


class Outlet(ABC):
    """Where snapshots go: written in the change's transaction, handed on after its commit."""

    @abstractmethod
    async def write(self, tx: WriteTx, messages: Sequence[OutMessage], at: int) -> Written:
        """Write the messages, in order, in ``tx``: they are durable once it commits."""

    @abstractmethod
    def after_commit(self, written: Written) -> None:
        """Hand on what :meth:`write` wrote, once its transaction committed; never blocks."""

    async def left(self, tx: WriteTx, subscriber_id: str, topic: str) -> bool:
        """A subscription left ``topic`` in ``tx`` (its row is gone or moved): drop what the
        outlet keeps for it there. Returns True when that left the topic with nothing (no
        subscription uses it: its messages and consumer groups went too); hand such topics
        to :meth:`emptied` once ``tx`` committed. Nothing by default: a router outside the
        store keeps its messages and consumer groups itself, on topics others may share (a
        DMaaP MR's groups are not this server's to remove), and its retention ages them out.
        """
        return False

    def emptied(self, topics: Sequence[str]) -> None:
        """The topics :meth:`left` emptied, once its transaction committed: let go of what
        is kept in memory for them. Never blocks; nothing by default.
        """
        return None


class InStoreOutlet(Outlet):
    """Appends snapshots to the embedded router's topics, then wakes its readers."""

    def __init__(self, router: EmbeddedRouter) -> None:
        self._router = router

    async def write(self, tx: WriteTx, messages: Sequence[OutMessage], at: int) -> Written:
        return Written(messages, await tx.append(messages, at))

    def after_commit(self, written: Written) -> None:
        self._router.wake_readers(written.heads, written.messages)

    async def left(self, tx: WriteTx, subscriber_id: str, topic: str) -> bool:
        # Dropped from memory first: no commit can refill it while this transaction holds the
        # write lock, and a rollback only costs the reads a trip to the store.
        await self._router.forget_tail(topic)
        return await tx.drop_subscriber_messages(subscriber_id, topic, now_ms())

    def emptied(self, topics: Sequence[str]) -> None:
        # Only once committed: a rollback keeps the groups, whose positions may not be
        # saved yet.
        self._router.forget_topics(topics)


class OutboxOutlet(Outlet):
    """Writes snapshots to the outbox, then wakes the relay that publishes them."""

    def __init__(self, relay: OutboxRelay) -> None:
        self._relay = relay

    async def write(self, tx: WriteTx, messages: Sequence[OutMessage], at: int) -> Written:
        await tx.outbox_add(messages, at)
        # The topic exists from now on, for readers, though the relay publishes a moment later.
        await tx.create_topics((m.topic for m in messages), at)
        return Written(messages)

    def after_commit(self, written: Written) -> None:
        self._relay.wake()


def outlet_for(store: Store, router: Router) -> tuple[Outlet, OutboxRelay | None]:
    """The outlet for a router, and the relay it needs if any: the embedded router keeps its
    topics in the store; any other router is fed from the outbox by a relay.
    """
    if isinstance(router, EmbeddedRouter):
        return InStoreOutlet(router), None
    relay = OutboxRelay(store, router)
    return OutboxOutlet(relay), relay
