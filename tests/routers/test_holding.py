"""HeldReads, the one way every router backend holds a read: wakes, deadlines, clients that
leave, drains, and the count the metrics report.
"""

from __future__ import annotations

import asyncio
import time

from policy_pubsub.routers.holding import EXPIRY_SLOT, WAKE_BATCH, HeldReads
from tests.conftest import wait_for


async def _held(
    held: HeldReads,
    topic: str | None = "t",
    *,
    deadline: float | None = None,
    gone: asyncio.Future[None] | None = None,
    until: asyncio.Future[None] | None = None,
) -> bool:
    waiter = held.waiter(topic)
    return await held.hold(topic, waiter, deadline=deadline, gone=gone, until=until)


async def test_wake_ends_the_holds_of_that_topic_only() -> None:
    """A wake of a topic ends its holds, which look again; a hold on another topic stays."""
    held = HeldReads()
    on_t = asyncio.create_task(_held(held, "t"))
    on_u = asyncio.create_task(_held(held, "u"))
    await wait_for(lambda: held.count == 2)
    held.wake(["t"])
    assert await on_t is True
    assert held.count == 1 and not on_u.done()
    held.wake(["u"])
    assert await on_u is True
    assert held.count == 0


async def test_a_wake_before_the_hold_is_not_lost() -> None:
    """A waiter taken before the read looks is completed by a wake that comes while it looks,
    so the hold that follows returns at once.
    """
    held = HeldReads()
    waiter = held.waiter("t")
    held.wake(["t"])
    await asyncio.wait_for(held.hold("t", waiter), 1)
    assert held.count == 0


async def test_deadline_ends_the_hold_within_one_slot() -> None:
    """A hold ends at its deadline or up to EXPIRY_SLOT later, and the read is then over."""
    held = HeldReads()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 0.1
    assert await _held(held, deadline=deadline) is True
    assert deadline <= loop.time() <= deadline + EXPIRY_SLOT + 0.5
    assert held.over(deadline, None)


async def test_gone_ends_the_hold_and_says_so() -> None:
    """When the client leaves, the hold ends and returns False: the read answers at once."""
    held = HeldReads()
    gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(_held(held, gone=gone))
    await wait_for(lambda: held.count == 1)
    gone.set_result(None)
    assert await task is False
    assert held.over(None, gone)


async def test_until_ends_the_hold() -> None:
    """A hold ends when the future it holds ``until`` completes (a DMaaP poll answering)."""
    held = HeldReads()
    poll: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(_held(held, None, until=poll))
    await wait_for(lambda: held.count == 1)
    poll.set_result(None)
    assert await task is True
    assert held.count == 0


async def test_drain_ends_every_hold_until_start() -> None:
    """A drain ends every hold, keyed or not, and reads are over until the next start."""
    held = HeldReads()
    tasks = [asyncio.create_task(_held(held, topic)) for topic in ("t", "u", None)]
    await wait_for(lambda: held.count == 3)
    held.drain()
    await asyncio.wait_for(asyncio.gather(*tasks), 1)
    assert held.count == 0 and held.draining
    assert held.over(None, None)
    held.start()
    assert not held.draining and not held.over(None, None)


async def test_wake_all_ends_every_hold_without_draining() -> None:
    """wake_all (after a reconnect) ends every hold; the router keeps holding reads."""
    held = HeldReads()
    tasks = [asyncio.create_task(_held(held, topic)) for topic in ("t", "u")]
    await wait_for(lambda: held.count == 2)
    held.wake_all()
    assert await asyncio.wait_for(asyncio.gather(*tasks), 1) == [True, True]
    assert not held.draining


async def test_many_waiters_are_woken_a_batch_per_loop_turn() -> None:
    """A wake of more than WAKE_BATCH holds completes the first batch at once and the rest on
    later event-loop turns.
    """
    held = HeldReads()
    waiters = [held.waiter("t") for _ in range(WAKE_BATCH * 2 + 1)]
    held.wake(["t"])
    assert sum(w.done() for w in waiters) == WAKE_BATCH
    await wait_for(lambda: all(w.done() for w in waiters))


def _burn(seconds: float) -> None:
    """Use this much of the thread's CPU time."""
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


async def test_wake_batches_shrink_when_the_woken_reads_take_long() -> None:
    """The reads a batch woke took 50 ms of CPU in their turn, far past WAKE_TURN_SECONDS:
    the next batch is half the first (it shrinks at most by half a turn), not WAKE_BATCH again.
    """
    held = HeldReads()
    waiters = [held.waiter("t") for _ in range(WAKE_BATCH * 4)]
    for waiter in waiters:
        waiter.add_done_callback(lambda _: _burn(0.001))
    held.wake(["t"])
    assert sum(w.done() for w in waiters) == WAKE_BATCH
    await asyncio.sleep(0)  # one turn: the first batch's reads, then the next batch
    assert sum(w.done() for w in waiters) == WAKE_BATCH + WAKE_BATCH // 2
    await wait_for(lambda: all(w.done() for w in waiters))


async def test_wake_batches_grow_when_the_woken_reads_are_quick() -> None:
    """The reads a batch woke took next to no CPU in their turn: the next batch grows, by
    half again at most.
    """
    held = HeldReads()
    waiters = [held.waiter("t") for _ in range(WAKE_BATCH * 4)]
    held.wake(["t"])
    assert sum(w.done() for w in waiters) == WAKE_BATCH
    await asyncio.sleep(0)
    assert sum(w.done() for w in waiters) == WAKE_BATCH + WAKE_BATCH * 3 // 2
    await wait_for(lambda: all(w.done() for w in waiters))


async def test_cancelled_hold_forgets_its_waiter() -> None:
    """A read cancelled while held leaves nothing behind: no count, no waiter to wake."""
    held = HeldReads()
    gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        _held(held, deadline=asyncio.get_running_loop().time() + 60, gone=gone)
    )
    await wait_for(lambda: held.count == 1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert held.count == 0
    gone.set_result(None)  # its callback was removed: nothing to complete
    held.wake(["t"])


async def test_discard_forgets_a_waiter_never_held() -> None:
    """A read that found messages discards its waiter; a later wake does not touch it."""
    held = HeldReads()
    waiter = held.waiter("t")
    held.discard("t", waiter)
    held.discard("t", waiter)  # idempotent
    held.wake(["t"])
    assert not waiter.done()
