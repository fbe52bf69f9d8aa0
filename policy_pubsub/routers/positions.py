"""Consumer group positions kept by a router process, with the store as their durable copy.

A group's position is the offset (embedded router) or stream sequence (NATS router) of the
last message it consumed (0: none yet, so a new group starts at the oldest retained message).
The store's ``consumer_groups`` table is the durable copy, shared by every replica. Each process
caches the positions it has seen: it loads them all from the store when its router starts, or a
group once, at its first read; advances them on its own acks (saved within one flush interval,
or at once when the interval is 0; a crash in between hands the group its last messages again,
which the revision check makes harmless), and may merge positions other replicas announce.
Positions only grow, so every merge takes the larger one. When announcements may have been
missed, the cache is marked stale and each group is loaded from the store again at its next
read. When the store drops a topic's groups, the process forgets them too
(:meth:`Positions.forget_topic`): a topic's groups are not kept for ever after it is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from policy_pubsub.exceptions import StoreUnavailable
from policy_pubsub.routers.base import Delivery
from policy_pubsub.store import GroupRow, Store, now_ms

log = logging.getLogger(__name__)


@dataclass(slots=True)
class GroupState:
    """One consumer group's position as this replica knows it; ``lock`` is held from a read
    that found messages until its delivery is acknowledged or released.
    """

    topic: str
    name: str
    position: int = 0
    last_consumed_at: int | None = None
    #: The store may know a newer position (never loaded, or announcements were missed).
    stale: bool = True
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def merge(self, position: int, at: int | None) -> None:
        if position > self.position:
            self.position, self.last_consumed_at = position, at


class Positions:
    """The positions of every consumer group this replica has seen."""

    def __init__(self, store: Store, *, flush_seconds: float) -> None:
        self._store = store
        self._flush_interval = flush_seconds
        self._groups: dict[tuple[str, str], GroupState] = {}
        self._names: dict[str, set[str]] = {}  # topic -> the names of its groups in _groups
        #: Every group the store holds is in ``_groups``: one that is not is new (position 0).
        self._all_loaded = False
        self._dirty: set[tuple[str, str]] = set()
        self._dirty_event = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_loop(), name="policy-pubsub positions")

    async def close(self) -> None:
        """Stop the flusher and save what is pending."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        try:
            await self.flush()
        except StoreUnavailable as exc:
            log.warning("could not save the last consumer positions: %s", exc)

    async def load(self, *, advisory: bool = False) -> None:
        """Load every group's position at once, before the first read (one query, where each
        new group would otherwise cost one at its first read).

        On a store this process alone uses, positions move only here: a group the store does
        not hold is new, and starts at 0 without a look-up. On a shared store other replicas
        move positions and create groups: there positions are loaded only when ``advisory``
        (the embedded router claims a group's row in the store for each read, so a position
        known here only spares a claim that would find nothing), and a group not loaded is
        still looked up at its first read.
        """
        shared = self._store.shared
        if shared and not advisory:
            return
        for row in await self._store.positions.all_groups():
            state = self._state(row.topic, row.name)
            state.merge(row.position, row.last_consumed_at)
            state.stale = False
        self._all_loaded = not shared

    async def get(self, topic: str, name: str) -> GroupState:
        """The group's state, loaded from the store when this replica may not be current."""
        state = self._groups.get((topic, name))
        if state is None:
            state = self._state(topic, name)
            state.stale = not self._all_loaded
        if state.stale:
            row = await self._store.positions.group(topic, name)
            state.stale = False
            if row is not None:
                state.merge(row.position, row.last_consumed_at)
        return state

    async def advance(self, state: GroupState, position: int) -> int:
        """This replica delivered up to ``position``; returns the time of consumption."""
        state.position = max(state.position, position)
        state.last_consumed_at = at = now_ms()
        self._dirty.add((state.topic, state.name))
        if self._flush_interval <= 0:
            await self.flush()
        else:
            self._dirty_event.set()
        return at

    def merge(self, topic: str, name: str, position: int, at: int | None) -> None:
        """Another replica moved the group to ``position``."""
        self._state(topic, name).merge(position, at)

    def mark_stale(self) -> None:
        """The store may know newer positions, and groups not seen here: look each up again."""
        self._all_loaded = False
        for state in self._groups.values():
            state.stale = True

    def _state(self, topic: str, name: str) -> GroupState:
        """The group's entry, made (stale) if there is none."""
        key = (topic, name)
        state = self._groups.get(key)
        if state is None:
            state = self._groups[key] = GroupState(topic, name)
            names = self._names.get(topic)
            if names is None:
                self._names[topic] = {name}
            else:
                names.add(name)
        return state

    def forget_topic(self, topic: str) -> bool:
        """The store dropped every consumer group of ``topic``: forget them here too, with
        any position not saved yet (it belongs to a group that is gone). Returns False, and
        forgets nothing, while one of them has a delivery open (its lock is held).
        """
        names = self._names.get(topic)
        if names is None:
            return True
        keys = [(topic, name) for name in names]
        if any(self._groups[key].lock.locked() for key in keys):
            return False
        for key in keys:
            del self._groups[key]
            self._dirty.discard(key)
        del self._names[topic]
        return True

    def topics(self) -> list[str]:
        """The topics this replica knows groups of, sorted."""
        return sorted(self._names)

    def states(self) -> Iterator[GroupState]:
        """Every group this replica knows."""
        return iter(self._groups.values())

    def of_topic(self, topic: str) -> Iterator[GroupState]:
        return (self._groups[(topic, name)] for name in self._names.get(topic, ()))

    async def flush(self) -> None:
        if not self._dirty:
            return
        keys, self._dirty = self._dirty, set()
        rows = [
            GroupRow(g.topic, g.name, g.position, g.last_consumed_at)
            for g in (self._groups[k] for k in keys)
        ]
        try:
            await self._store.positions.save(rows)
        except StoreUnavailable:
            # (less any group forgotten while this saved)
            self._dirty |= {key for key in keys if key in self._groups}
            raise

    async def _flush_loop(self) -> None:
        while True:
            await self._dirty_event.wait()
            self._dirty_event.clear()
            await asyncio.sleep(self._flush_interval)
            try:
                await self.flush()
            except StoreUnavailable as exc:
                log.warning("could not save consumer positions, will retry: %s", exc)
                self._dirty_event.set()


class GroupDelivery(Delivery):
    """Messages read for a group whose lock is held until :meth:`ack` or :meth:`release`;
    acknowledging hands the last message's position to ``advance``.
    """

    def __init__(
        self,
        advance: Callable[[GroupState, int], Awaitable[None]],
        group: GroupState,
        rows: list[tuple[int, str]],
    ) -> None:
        self._advance_to = advance
        self._group = group
        self._last = rows[-1][0]
        self.messages = [body for _, body in rows]
        self._open = True

    async def ack(self) -> None:
        if self._open:
            try:
                await self._advance()
            finally:
                await self.release()

    async def release(self) -> None:
        if self._open:
            self._open = False
            try:
                await self._close()
            finally:
                self._group.lock.release()

    async def _advance(self) -> None:
        await self._advance_to(self._group, self._last)

    async def _close(self) -> None:
        """Anything to let go of besides the group's lock."""
