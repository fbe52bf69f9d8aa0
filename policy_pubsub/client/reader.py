"""The reading side of a subscriber: it learns the newest snapshot of one subscription.

``Reader.latest`` is the newest snapshot known, which may be ahead of what the component has
applied. Three things move it:

- the subscribe answer, and a re-read (the subscription read with its policies, labelled by the
  server with the exact revision of the snapshot they are), are the server's word and are
  taken as they are (even with a lower revision: the server's store was reset or restored);
- a snapshot read from the topic (its ``Feed``: a long-poll, or the subscriber's RabbitMQ
  queue) is taken only when its revision is above ``latest``'s, so
  duplicates, stale snapshots and the ``subscribe`` snapshot of our own subscribe are dropped;
  other subscribers' snapshots on a shared topic are never looked at.

After a failed request (or a lost AMQP connection) it waits (jittered exponential backoff)
and then re-reads before it polls again, because a failed poll may be a reply the router sent
and the network lost. A periodic re-read (``resync_interval``) is the last safety net.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable
from typing import TypeVar

from policy_pubsub import constants
from policy_pubsub.client.changes import EMPTY, Snapshot, snapshots, valid_policies
from policy_pubsub.client.feed import Feed
from policy_pubsub.client.http import TransientError
from policy_pubsub.client.timings import Timings
from policy_pubsub.client.wire import Wire
from policy_pubsub.exceptions import ServerUnreachable
from policy_pubsub.subscription_record import SubscriptionRecord

log = logging.getLogger("policy_pubsub.client")

T = TypeVar("T")


class Reader:
    """Reads one subscriber's ``feed`` and keeps ``latest``; see the module docstring. The
    subscription requests (subscribe, re-read) go over ``wire``.
    """

    def __init__(
        self,
        wire: Wire,
        feed: Feed,
        *,
        record: SubscriptionRecord,
        timings: Timings,
        stopped: asyncio.Event,
    ) -> None:
        self._wire = wire
        self.feed = feed
        self.subscriber_id = record.subscriber_id
        self._topic = record.subscriber_topic
        self._subscribe_body = record.subscribe_body()
        self._timings = timings
        self._stopped = stopped
        self.latest: Snapshot = EMPTY
        self._reread_needed = False
        self._next_resync = 0.0
        self._failures = 0
        self._failing_since: float | None = None

    # -- the steps ----------------------------------------------------------------------------

    async def subscribe(self) -> None:
        """Subscribe (insert or update), retrying what may heal until it works, ``stop()``,
        or ``give_up_after`` (then ``ServerUnreachable``). A 4xx is ``SubscriptionRejected``.
        """
        while not self._stopped.is_set():
            try:
                await self._subscribe_once()
            except TransientError as exc:
                await self._back_off("subscribe", exc)
            else:
                self._failures, self._failing_since = 0, None
                return

    async def step(self) -> None:
        """One request that may learn a newer snapshot: a re-read when one is needed or due,
        else a long-poll. A failure that may heal is logged and waited out (backoff).
        """
        reread = self._reread_needed or self._resync_due()
        try:
            if reread:
                await self._reread()
            else:
                await self._poll()
        except TransientError as exc:
            self._reread_needed = True
            await self._back_off("re-read" if reread else "poll", exc)
        else:
            # Only a poll that worked ends a run of failures: a re-read that works while the
            # polls keep failing (a router or RabbitMQ down, the server up) does not restart
            # the backoff, so the retries slow down to backoff_max and give_up_after counts.
            if not reread:
                self._failures, self._failing_since = 0, None

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or less if the subscriber is stopped meanwhile."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        await self.unless_stopped(asyncio.sleep(seconds))

    def backoff(self, failures: int) -> float:
        """The wait after ``failures`` failures in a row: exponential, capped, jittered."""
        timings = self._timings
        ceiling = min(timings.backoff_max, timings.backoff_initial * 2.0 ** min(failures - 1, 30))
        return ceiling * random.uniform(0.5, 1.0)

    async def unless_stopped(self, awaitable: Awaitable[T]) -> T | None:
        """Await ``awaitable``; cancel it and return None if the subscriber is stopped first."""
        work = asyncio.ensure_future(awaitable)
        stop = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, stop):
                task.cancel()
            await asyncio.gather(work, stop, return_exceptions=True)
        if work.cancelled():
            return None
        return work.result()

    # -- the requests -------------------------------------------------------------------------

    async def _subscribe_once(self) -> None:
        answer = await self._wire.subscribe(self.subscriber_id, self._subscribe_body)
        policies = valid_policies(answer.get("policies"))
        if policies is None:
            raise TransientError(self.subscriber_id, "the subscribe answer has no policies")
        self._take(Snapshot(answer["revision"], policies, constants.EVENT_SUBSCRIBE))
        log.info(
            "subscribed %s on topic %s at revision %d: %d policies",
            self.subscriber_id,
            self._topic,
            answer["revision"],
            len(policies),
        )

    async def _reread(self) -> None:
        """Read the subscription with its policies: one answer, in which the server labels the
        policies with the revision of the snapshot they are (``status.last_revision``), so a
        snapshot polled afterwards is newer than the re-read only if it really is.
        """
        record = await self._wire.subscription(self.subscriber_id, with_policies=True)
        if record is None:
            log.warning("the server has no subscription %s: subscribing again", self.subscriber_id)
            await self._subscribe_once()
            return
        status = record.get("status")
        revision = status.get("last_revision") if isinstance(status, dict) else None
        policies = valid_policies(record.get("policies"))
        if not isinstance(revision, int) or isinstance(revision, bool) or policies is None:
            why = "the subscription answer has no policies labelled with a revision"
            raise TransientError(self.subscriber_id, why)
        self._take(Snapshot(revision, policies, constants.EVENT_RESYNC))
        log.info(
            "re-read %d policies of %s as of revision %d",
            len(policies),
            self.subscriber_id,
            revision,
        )

    async def _poll(self) -> None:
        hold = self._timings.poll_timeout
        if self._timings.resync_interval > 0:
            hold = min(hold, max(0.0, self._next_resync - asyncio.get_running_loop().time()))
        messages = await self.unless_stopped(self.feed.poll(timeout=hold))
        for snapshot in snapshots(messages or [], self.subscriber_id):
            if snapshot.revision <= self.latest.revision:
                log.debug(
                    "dropping %s snapshot %d of %s: not above %d",
                    snapshot.event,
                    snapshot.revision,
                    self.subscriber_id,
                    self.latest.revision,
                )
                continue
            self.latest = snapshot

    # -- bookkeeping --------------------------------------------------------------------------

    def _take(self, snapshot: Snapshot) -> None:
        """Take the server's word (a subscribe answer or a re-read) as the newest snapshot."""
        latest = self.latest
        if latest is not EMPTY and snapshot.revision < latest.revision:
            log.warning(
                "the server's revision went back from %d to %d (its store was reset or "
                "restored): taking its policies as they are",
                latest.revision,
                snapshot.revision,
            )
        if snapshot.revision != latest.revision or not snapshot.same_policies(latest):
            self.latest = snapshot
        self._reread_needed = False
        loop = asyncio.get_running_loop()
        self._next_resync = loop.time() + self._timings.resync_interval

    def _resync_due(self) -> bool:
        if self._timings.resync_interval <= 0:
            return False
        return asyncio.get_running_loop().time() >= self._next_resync

    async def _back_off(self, what: str, exc: TransientError) -> None:
        now = asyncio.get_running_loop().time()
        if self._failing_since is None:
            self._failing_since = now
        self._failures += 1
        delay = self.backoff(self._failures)
        if self._timings.give_up_after is not None:
            left = self._failing_since + self._timings.give_up_after - now
            if left <= 0:
                raise ServerUnreachable(exc.url, self._failures, exc.reason) from exc
            delay = min(delay, left)
        log.warning("%s failed (%s); retrying in %.2f s", what, exc, delay)
        await self.sleep(delay)
