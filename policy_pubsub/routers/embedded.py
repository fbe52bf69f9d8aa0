"""The embedded router: topics, messages and consumer positions in the store itself.

Messages are appended inside the transaction of the change that causes them, so a change and
its notifications commit together. A held read waits on a waiter of its topic
(:class:`~policy_pubsub.routers.holding.HeldReads`), which the writer completes after its
commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager

from policy_pubsub import constants
from policy_pubsub.background import Periodic
from policy_pubsub.exceptions import NotFound, StoreUnavailable
from policy_pubsub.routers.base import Delivery, EmptyDelivery, GroupStats, Router, TopicStats
from policy_pubsub.routers.holding import HeldReads
from policy_pubsub.routers.messages import OutMessage
from policy_pubsub.routers.positions import GroupDelivery, GroupState, Positions
from policy_pubsub.slices import Slices
from policy_pubsub.store import GroupClaim, Store, now_ms
from policy_pubsub.store.notify import TOPICS_CHANNEL

log = logging.getLogger(__name__)

HEADS_POLL_SECONDS = 1.0
# The newest messages of each topic, kept in memory after their commit so that the long-polls
# a push wakes are answered without one store query each (on a single-process store). A read
# the tail does not cover goes to the store, which stays the source of truth.
TAIL_MESSAGES = 16
TAIL_CHARS = 64 * 2**20  # all tails together; the least recently appended topics go first
# The tails are built from what commits appended when a read first needs them, not in the
# commit (a push to 10,000 topics spent ~35 ms there): at most this many messages wait.
UNFOLDED_MESSAGES = 32_768
# The reads a push wakes have the tails built by one task, this many topics at a time between
# looks at the clock, the event loop running between slices (policy_pubsub.slices).
FOLD_STEP = 64


class _Unfolded:
    """What one commit appended, not in the tails yet: its messages, grouped by topic when
    the folding starts, and how many of those topics are in the tails already.
    """

    __slots__ = ("done", "heads", "messages", "topics")

    def __init__(self, heads: Mapping[str, int], messages: Sequence[OutMessage]) -> None:
        self.heads = heads
        self.messages = messages
        self.topics: list[tuple[str, list[str]]] | None = None
        self.done = 0

    def grouped(self) -> list[tuple[str, list[str]]]:
        """(topic, bodies in order) for each topic appended to, in order of first message."""
        if self.topics is None:
            by_topic: dict[str, list[str]] = {}
            for message in self.messages:
                bodies = by_topic.get(message.topic)
                if bodies is None:
                    by_topic[message.topic] = [message.body]
                else:
                    bodies.append(message.body)
            self.topics = list(by_topic.items())
        return self.topics


class _ClaimedDelivery(GroupDelivery):
    """On a shared store: also holds the group's row, locked in the database, until ack or
    release; acknowledging moves the position there.
    """

    def __init__(
        self,
        group: GroupState,
        rows: list[tuple[int, str]],
        claim: tuple[AbstractAsyncContextManager[GroupClaim], GroupClaim],
    ) -> None:
        super().__init__(_no_advance, group, rows)
        self._claim = claim

    async def _advance(self) -> None:
        at = now_ms()
        await self._claim[1].advance(self._last, at)
        self._group.position = self._last
        self._group.last_consumed_at = at

    async def _close(self) -> None:
        await self._claim[0].__aexit__(None, None, None)


async def _no_advance(_group: GroupState, _position: int) -> None:
    return None


def _lag(head: int, position: int, base: int) -> int:
    """How many offsets a group at ``position`` is behind ``head``, on a topic whose offsets
    start after ``base``: a new group (position 0) on a topic made again above the store's
    offset floor is behind by its messages, not by the floor; so is a position a replica
    still holds from before the topic's row was dropped.
    """
    return max(0, head - max(position, base))


class EmbeddedRouter(Router):
    """DMaaP-style topics kept in the store (SQLite or PostgreSQL)."""

    def __init__(
        self,
        store: Store,
        *,
        retention_seconds: float,
        maintenance_interval_seconds: float,
        position_flush_seconds: float,
        max_message_bytes: int = constants.DEFAULT_MAX_MESSAGE_BYTES,
        snapshots_of_subscriptions: bool = False,
    ) -> None:
        self._store = store
        # Keyed messages are the snapshots of the store's subscriptions (the server's case):
        # maintenance may drop those whose subscription is gone (TopicRepository.drop_orphans).
        self._drop_orphans = snapshots_of_subscriptions
        self._max_message_bytes = max_message_bytes
        self._retention_ms = int(retention_seconds * 1000)
        self._positions = Positions(store, flush_seconds=position_flush_seconds)
        self._heads: dict[str, int] = {}
        self._held = HeldReads()
        # topic -> the reads under way on it (from the start of ``read`` to its return)
        self._reading: dict[str, int] = {}
        # Topics the store dropped whose heads, tails and groups are still kept here, until
        # no read is under way on them and no delivery of theirs is open (forget_topics).
        self._forgettable: set[str] = set()
        # topic -> contiguous (seq, body), least recently appended first
        self._tails: OrderedDict[str, list[tuple[int, str]]] = OrderedDict()
        self._tail_chars = 0
        # What commits appended since the tails were last brought up to date, in commit order.
        self._unfolded: list[_Unfolded] = []
        self._unfolded_count = 0
        self._folding: asyncio.Task[None] | None = None  # building them in slices
        self._heads_wanted = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # On a shared store, one replica at a time drops expired and superseded messages.
        self._maintenance_interval = maintenance_interval_seconds
        self._maintenance = Periodic(
            "topic retention and compaction",
            store,
            self.maintain,
            interval=maintenance_interval_seconds,
            expected=(StoreUnavailable,),
        )

    @property
    def max_message_bytes(self) -> int:
        """The server's ``max_message_bytes``: the same cap as ``POST /events``."""
        return self._max_message_bytes

    @property
    def held_reads(self) -> int:
        return self._held.count

    async def start(self) -> None:
        self._heads = await self._store.topics.heads()
        # On a shared store the positions loaded are where groups stood at least: each read
        # claims its group's row, so a position that moved on elsewhere costs one empty claim.
        await self._positions.load(advisory=True)
        self._held.start()
        self._positions.start()
        self._maintenance.start()
        self._tasks = []
        notifications = self._store.notifications
        if notifications is not None:
            notifications.on(TOPICS_CHANNEL, self._topics_committed)
            notifications.on_reconnect(self._heads_wanted.set)
            self._tasks.append(
                asyncio.create_task(self._heads_loop(), name="policy-pubsub topic heads")
            )
            if self._drop_orphans:
                self._tasks.append(
                    asyncio.create_task(self._forget_loop(), name="policy-pubsub unused topics")
                )

    def _topics_committed(self, payload: str) -> None:
        """Another replica appended to topics: ``topic:last_offset`` pairs."""
        heads = {}
        for item in payload.split(","):
            topic, _, last = item.rpartition(":")
            if topic and last.isdigit():
                heads[topic] = int(last)
        self.wake_readers(heads)

    async def _heads_loop(self) -> None:
        """Re-read every topic's head after notifications may have been lost, and once a
        second while they are not arriving at all.
        """
        notifications = self._store.notifications
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._heads_wanted.wait(), HEADS_POLL_SECONDS)
            connected = notifications is not None and notifications.connected
            if connected and not self._heads_wanted.is_set():
                continue
            self._heads_wanted.clear()
            try:
                self.wake_readers(await self._store.topics.heads())
            except StoreUnavailable as exc:
                log.warning("cannot read topic heads: %s", exc)

    async def drain(self) -> None:
        self._held.drain()

    async def close(self) -> None:
        await self.drain()
        await self._maintenance.close()
        if self._folding is not None:
            self._folding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._folding
            self._folding = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._positions.close()

    # -- writing --------------------------------------------------------------------------

    async def publish(self, batch: Sequence[OutMessage]) -> None:
        async with self._store.write() as tx:
            heads = await tx.append(batch, now_ms())
        self.wake_readers(heads, batch)

    def wake_readers(self, heads: Mapping[str, int], messages: Sequence[OutMessage] = ()) -> None:
        """Wake the held reads of the topics that moved on, after a transaction that appended
        to them committed (here, or on a shared store in another replica): ``heads`` holds
        each topic's new last offset and ``messages``, when the caller has them, what was
        appended, in order (kept in memory to answer the woken reads; the tails take them
        in when a read first looks, see :meth:`_fold`).
        """
        if messages and not self._store.shared:
            self._unfolded.append(_Unfolded(heads, messages))
            self._unfolded_count += len(messages)
            if self._unfolded_count > UNFOLDED_MESSAGES:  # no read came for them: now then
                self._fold_task()
        moved: list[str] = []
        for topic, last in heads.items():
            if last <= self._heads.get(topic, -1):
                continue
            self._heads[topic] = last
            moved.append(topic)
        if self._forgettable and moved:  # written to again: in use, not to be forgotten
            self._forgettable.difference_update(moved)
        if self._unfolded and moved and self._held.count:
            # The held reads are woken once the tails hold what they will read (built in
            # slices): woken before, they would all wait for the tails and then answer in
            # one event-loop turn, not a batch per turn.
            self._fold_task().add_done_callback(lambda _: self._held.wake(moved))
        else:
            self._held.wake(moved)

    def _fold(self) -> None:
        """Bring the tails up to date with what commits appended since the last time."""
        while self._unfolded:
            self._fold_step(None)

    def _fold_step(self, topics: int | None) -> None:
        """Take the next ``topics`` topics (None: all) of the oldest commit not in the tails
        yet into them. Each step leaves ``_unfolded`` as it found it or shorter, so the
        folding can stop between steps and whoever folds next goes on from there.
        """
        entry = self._unfolded[0]
        grouped = entry.grouped()
        end = len(grouped) if topics is None else min(len(grouped), entry.done + topics)
        self._remember(entry.heads, grouped[entry.done : end])
        entry.done = end
        if end == len(grouped):
            del self._unfolded[0]
            self._unfolded_count -= len(entry.messages)

    async def _folded(self) -> None:
        """Until the tails hold what commits appended so far: one task folds it in slices,
        the event loop running between them (a push to 10,000 topics is 10,000 tails to
        extend), and the reads that need the tails wait for it.
        """
        await asyncio.shield(self._fold_task())

    def _fold_task(self) -> asyncio.Task[None]:
        """The task that folds in slices, started if it does not run."""
        folding = self._folding
        if folding is None or folding.done():
            folding = self._folding = asyncio.get_running_loop().create_task(
                self._fold_in_slices(), name="policy-pubsub tails"
            )
        return folding

    async def _fold_in_slices(self) -> None:
        slices = Slices()
        while self._unfolded:
            self._fold_step(FOLD_STEP)
            if slices.over():
                await slices.pause()
        if self._forgettable:  # those that waited for the fold (_forget_topic)
            self.forget_topics(())

    def _remember(
        self, heads: Mapping[str, int], by_topic: Sequence[tuple[str, list[str]]]
    ) -> None:
        """Add committed messages, each topic's bodies in order, to their topics' tails
        (``append`` numbered each topic's messages, in order, up to its new head).
        """
        tails = self._tails
        added = 0
        for topic, bodies in by_topic:
            last = heads.get(topic)
            if last is None:
                continue
            first = last - len(bodies) + 1
            tail = tails.get(topic)
            if tail and tail[-1][0] != first - 1:  # a gap: restart from these messages
                added -= sum(len(body) for _, body in tail)
                tail = None
            if tail is None:
                tail = list(zip(range(first, last + 1), bodies, strict=True))
                tails[topic] = tail
            else:
                tail.extend(zip(range(first, last + 1), bodies, strict=True))
            tails.move_to_end(topic)  # most recently appended last: evicted last
            for body in bodies:
                added += len(body)
            if len(tail) > TAIL_MESSAGES:
                added -= sum(len(body) for _, body in tail[:-TAIL_MESSAGES])
                del tail[:-TAIL_MESSAGES]
        self._tail_chars += added
        while self._tail_chars > TAIL_CHARS and tails:
            _, evicted = tails.popitem(last=False)
            self._tail_chars -= sum(len(body) for _, body in evicted)

    def _from_tail(self, topic: str, position: int, head: int, limit: int) -> list[tuple[int, str]]:
        """The messages after ``position`` up to ``head`` from memory, or [] if the tail
        does not hold all of them.
        """
        if self._unfolded:
            self._fold()
        tail = self._tails.get(topic)
        if not tail or tail[0][0] > position + 1 or tail[-1][0] < head:
            return []
        start = position + 1 - tail[0][0]
        return tail[max(0, start) : max(0, start) + limit]

    async def _trim_tails(self, highest: Mapping[str, int]) -> None:
        """Maintenance is dropping messages, up to offset ``highest[topic]`` of each topic at
        most: each of those topics' tails keeps only what comes after, so it never holds a
        message the store dropped (a read it no longer covers goes to the store). Called in
        the transaction that drops them, before its commit: no commit can add to the tails
        meanwhile (this one holds the write lock, and every append is folded in first, in
        slices); a rollback only costs some reads a trip to the store. The other topics'
        tails stay.
        """
        if self._unfolded:
            await self._folded()
        tails = self._tails
        for topic, seq in highest.items():
            tail = tails.get(topic)
            if not tail or tail[0][0] > seq:
                continue
            cut = seq + 1 - tail[0][0]
            self._tail_chars -= sum(len(body) for _, body in tail[:cut])
            if cut >= len(tail):
                del tails[topic]
            else:
                del tail[:cut]

    def _forget_tails(self) -> None:
        self._unfolded, self._unfolded_count = [], 0
        self._tails.clear()
        self._tail_chars = 0

    # -- reading --------------------------------------------------------------------------

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
        # Counted until the read returns: its topic is not forgotten meanwhile
        # (forget_topics). Here, not in a nested coroutine that every held read would keep.
        self._reading[topic] = self._reading.get(topic, 0) + 1
        try:
            if topic not in self._heads:
                row = await self._store.topics.get(topic)
                if row is None:
                    raise NotFound("topic", topic)
                self._heads[topic] = max(row.last_offset, self._heads.get(topic, 0))
            state = await self._positions.get(topic, group)
            deadline = asyncio.get_running_loop().time() + timeout
            while True:
                if self._heads[topic] > state.position:
                    delivery = await self._take(state, limit)
                    if delivery is not None:
                        return delivery
                if self._held.over(deadline, gone):
                    return EmptyDelivery()
                if self._heads[topic] > state.position:
                    continue  # a commit landed while _take was awaiting: look again, not wait
                waiter = self._held.waiter(topic)
                if not await self._held.hold(topic, waiter, deadline=deadline, gone=gone):
                    return EmptyDelivery()
        finally:
            under_way = self._reading[topic] - 1
            if under_way:
                self._reading[topic] = under_way
            else:
                del self._reading[topic]
                if topic in self._forgettable:
                    self._forget_topic(topic)

    async def _take(self, state: GroupState, limit: int) -> Delivery | None:
        await state.lock.acquire()
        try:
            if self._store.shared:
                return await self._take_claimed(state, limit)
            if self._unfolded and self._heads[state.topic] > state.position:
                await self._folded()
            head = self._heads[state.topic]  # before the read: see _take_claimed
            if head > state.position:
                rows = self._from_tail(state.topic, state.position, head, limit)
                if not rows:
                    rows = await self._store.topics.messages(state.topic, state.position, limit)
                if rows:
                    return GroupDelivery(self._advance, state, rows)
                # Everything up to the head was expired or compacted away: nothing to consume.
                state.position = head
        except BaseException:
            state.lock.release()
            raise
        state.lock.release()
        return None

    async def _take_claimed(self, state: GroupState, limit: int) -> Delivery | None:
        """On a shared store the position lives in the database, locked while a delivery is
        open, so replicas serving one group never hand out the same message twice.
        Called with the group's lock held; releases it when nothing is delivered.
        """
        manager = self._store.positions.claim(state.topic, state.name)
        claim = await manager.__aenter__()
        try:
            # Taken before the read: every offset up to this head committed before the read
            # starts, so the read sees those messages still kept. A head taken after it may
            # count a message committed meanwhile, which the read did not see.
            head = self._heads.get(state.topic, 0)
            rows = await claim.read(limit)
        except BaseException as exc:
            await manager.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        if rows:
            return _ClaimedDelivery(state, rows, (manager, claim))
        await manager.__aexit__(None, None, None)
        # Nothing after the stored position up to that head is left to consume (another
        # replica consumed it, or it expired or was compacted away): wait for what comes
        # after it. The stored position stays as it was (the claim rolled back).
        state.position = max(state.position, claim.position, head)
        state.lock.release()
        return None

    async def _advance(self, state: GroupState, position: int) -> None:
        await self._positions.advance(state, position)

    async def maintain(self) -> tuple[int, int]:
        """Drop expired messages, then superseded snapshots, then what outlived its
        subscription, and forget the topics the store holds nothing for any more
        (:meth:`_forget_unused`); returns the first two counts. The store drops them a chunk
        per transaction, and each chunk trims the tails of the topics it touched
        (:meth:`_trim_tails`): the others keep answering reads from memory.
        """
        topics, trim = self._store.topics, self._trim_tails
        expired = await topics.expire(now_ms() - self._retention_ms, dropped=trim)
        compacted = await topics.compact(dropped=trim)
        orphans = 0
        if self._drop_orphans:
            orphans = await topics.drop_orphans(dropped=trim, groups_dropped=self.forget_topics)
            await self._forget_unused(every_head=self._store.shared)
        if self._forgettable:  # those still read or delivered to when dropped
            self.forget_topics(())
        if expired or compacted or orphans:
            log.info(
                "dropped %d expired and %d superseded messages, and %d rows of gone subscriptions",
                expired,
                compacted,
                orphans,
            )
        return expired, compacted

    async def _forget_unused(self, *, every_head: bool = False) -> None:
        """Forget the topics whose consumer groups this process keeps (and with
        ``every_head``, whose heads it keeps) while the store holds nothing for them: no
        subscription uses them and they retain no message, whether or not their row is still
        there. A read that reaches such a topic after the store dropped it (a component's
        last poll, arriving after its unsubscribe; a poller whose subscription is gone) makes
        its group again here, with no row in the store (it consumed nothing), so neither the
        unsubscribe nor :meth:`~policy_pubsub.store.topics.TopicRepository.drop_orphans`
        would ever forget it. A topic appended to while the store was asked is in use again:
        kept.
        """
        held = self._positions.topics()
        if every_head:
            held = sorted(set(held).union(self._heads))
        if not held:
            return
        heads = {topic: self._heads.get(topic) for topic in held}
        unused = await self._store.topics.unused(held)
        self.forget_topics([topic for topic in unused if self._heads.get(topic) == heads[topic]])

    async def _forget_loop(self) -> None:
        """On a shared store only the replica that leads maintenance hears which topics it
        dropped; every replica learns heads of topics from the others' announcements. So
        each one, at maintenance's cadence, forgets the heads and groups of the topics the
        store holds nothing for any more: under a churn of subscribers they would otherwise
        pile up in the replicas that did not run the unsubscribe or the maintenance. (The
        replica that leads maintenance does it there, once.)
        """
        while True:
            await asyncio.sleep(self._maintenance_interval)
            if self._maintenance.leading:
                continue  # its maintenance does it (maintain)
            try:
                await self._forget_unused(every_head=True)
            except StoreUnavailable as exc:  # the outage is reported where requests meet it
                log.debug("cannot look for unused topics: %s", exc)

    async def forget_tail(self, topic: str) -> None:
        """The store is dropping messages of ``topic`` (in a transaction that holds the write
        lock): read them from there from now on. What commits appended is folded in first
        (in slices), so no later fold brings a dropped message back into the tail.
        """
        if self._unfolded:
            await self._folded()
        self._drop_tail(topic)

    def _drop_tail(self, topic: str) -> None:
        tail = self._tails.pop(topic, None)
        if tail:
            self._tail_chars -= sum(len(body) for _, body in tail)

    def forget_topics(self, topics: Iterable[str]) -> None:
        """The store dropped every message and consumer group of these topics (committed):
        forget each one's head, tail and group positions here too, so that topics a churn
        of subscribers leaves behind cost no memory. A topic with a read under way, or a
        delivery open, is forgotten once the last of those ends (or at the next call or
        maintenance), unless it is written to meanwhile. A later read of the topic reads
        its head from the topic row (maintenance may drop the row later, raising the store's
        offset floor above its offsets: a topic made again starts above every head and
        position still held anywhere), and its groups start as new ones, as the store has
        them now.
        """
        for topic in (*topics, *self._forgettable):
            self._forget_topic(topic)

    def _forget_topic(self, topic: str) -> None:
        # While commits' appends wait to be folded, one of them may hold messages of this
        # topic: forgotten before they are folded, its tail would come back. The fold task
        # forgets what is left once it is done.
        if self._unfolded or topic in self._reading or not self._positions.forget_topic(topic):
            self._forgettable.add(topic)
            if self._unfolded:
                self._fold_task()
            return
        self._forgettable.discard(topic)
        self._heads.pop(topic, None)
        self._drop_tail(topic)

    # -- topics -----------------------------------------------------------------------------

    async def topics(self) -> list[str]:
        return await self._store.topics.names()

    async def stats(self, topic: str) -> TopicStats:
        details = await self._store.topics.details(topic)
        if details is None:
            raise NotFound("topic", topic)
        row, count, stored_groups = details
        head = max(row.last_offset, self._heads.get(topic, 0))
        groups = {g.name: (g.position, g.last_consumed_at) for g in stored_groups}
        if not self._store.shared:  # here the process knows positions before the store does
            for state in self._positions.of_topic(topic):
                groups[state.name] = (state.position, state.last_consumed_at)
        read_up_to = max((position for position, _ in groups.values()), default=0)
        oldest = (
            await self._store.topics.oldest_after(topic, read_up_to) if head > read_up_to else None
        )
        return TopicStats(
            name=topic,
            messages=count,
            last_published_at=row.last_published_at,
            oldest_unread_at=oldest,
            consumer_groups=[
                GroupStats(name, position, _lag(head, position, row.base_offset), at)
                for name, (position, at) in sorted(groups.items())
            ],
        )

    async def lags(self, topics: Sequence[str]) -> dict[str, int]:
        """Every topic's lag, as :meth:`stats` computes it, without a query per topic. On a
        store this process alone uses, heads and positions are all in memory (loaded at
        start, moved here since): only the topics without a consumer group cost anything,
        one count of their messages, and the topics whose offsets do not start at 1, one
        look-up of their base offsets. On a shared store, one statement over all topics
        (``TopicRepository.lag_figures``).
        """
        wanted = set(topics)
        if self._store.shared:
            lags: dict[str, int] = {}
            for topic, (last, base, furthest_back, count) in (
                await self._store.topics.lag_figures()
            ).items():
                if topic in wanted:
                    newest = max(last, self._heads.get(topic, 0))
                    lags[topic] = (
                        count if furthest_back is None else _lag(newest, furthest_back, base)
                    )
            return lags
        slowest_of: dict[str, int] = {}
        for state in self._positions.states():
            known = slowest_of.get(state.topic)
            if known is None or state.position < known:
                slowest_of[state.topic] = state.position
        lags = {}
        ungrouped: list[str] = []
        grouped: dict[str, tuple[int, int]] = {}  # topic -> (head, slowest position)
        for topic in wanted:
            head = self._heads.get(topic)
            if head is None:
                continue  # nothing published to it yet
            position = slowest_of.get(topic)
            if position is None:
                ungrouped.append(topic)
            else:
                grouped[topic] = (head, position)
        bases = await self._store.topics.bases(sorted(grouped))
        for topic, (head, position) in grouped.items():
            lags[topic] = _lag(head, position, bases.get(topic, 0))
        counts = await self._store.topics.counts(sorted(ungrouped))
        lags.update((topic, counts.get(topic, 0)) for topic in ungrouped)
        return lags

    async def ping(self) -> None:
        await self._store.ping()
