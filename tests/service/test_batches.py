"""Batches: requests queued behind a transaction commit together; with a commit delay, the
callers answered by the last commit get to join the next one, and a lone caller never waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from policy_pubsub.service import batches as batches_module
from policy_pubsub.service.batches import Batches
from tests.conftest import wait_for

LONG = 60.0  # a commit delay no test may wait out: its deadlines are far shorter


class Committer:
    """Commits by recording the batch; commit i (from 0) first waits for ``gates[i]``, if
    there is one.
    """

    def __init__(self, gates: int = 0) -> None:
        self.gates = [asyncio.Event() for _ in range(gates)]
        self.started = 0
        self.batches: list[list[str]] = []

    async def __call__(self, batch: Sequence[str]) -> list[str]:
        number = self.started
        self.started += 1
        if number < len(self.gates):
            await self.gates[number].wait()
        self.batches.append(list(batch))
        return [f"{request} committed" for request in batch]


async def _cohort_then_return(
    delay: float,
) -> tuple[Committer, Batches[str, str], asyncio.Lock, list[asyncio.Task[str]]]:
    """Caller a commits a1 alone while b, c and d queue behind it; once a1 is answered and
    the next commit holds the lock, a sends a2 (its round trip), and the commits go on.
    Returns once every request was answered.
    """
    lock = asyncio.Lock()
    committer = Committer(gates=2)
    batches: Batches[str, str] = Batches(lock, committer, 256, delay=delay)

    async def caller_a() -> str:
        assert await batches.submit("a1") == "a1 committed"
        await wait_for(lambda: lock.locked())  # the next commit's leader took the lock
        # The second commit may end once a2 is queued (submit queues it before it awaits).
        asyncio.get_running_loop().call_soon(committer.gates[1].set)
        return await batches.submit("a2")

    a = asyncio.create_task(caller_a())
    await wait_for(lambda: committer.started == 1)
    others = [asyncio.create_task(batches.submit(name)) for name in "bcd"]
    await wait_for(lambda: batches.queued == 3)
    committer.gates[0].set()
    async with asyncio.timeout(10):
        answers = await asyncio.gather(a, *others)
    assert answers == ["a2 committed", "b committed", "c committed", "d committed"]
    return committer, batches, lock, [a, *others]


async def _queued_behind_a_commit(
    delay: float, first: str, names: Sequence[str]
) -> tuple[Committer, Batches[str, str], list[asyncio.Task[str]]]:
    """Request ``first`` commits alone, held until the requests ``names`` are queued behind
    it; then it is let through. Returns the tasks of all of them, ``first``'s first.
    """
    committer = Committer(gates=1)
    batches: Batches[str, str] = Batches(asyncio.Lock(), committer, 256, delay=delay)
    head = asyncio.create_task(batches.submit(first))
    await wait_for(lambda: committer.started == 1)
    others = [asyncio.create_task(batches.submit(name)) for name in names]
    await wait_for(lambda: batches.queued == len(names))
    committer.gates[0].set()
    return committer, batches, [head, *others]


async def test_a_lone_caller_never_waits_for_the_delay() -> None:
    committer = Committer()
    batches: Batches[str, str] = Batches(asyncio.Lock(), committer, 256, delay=LONG)
    async with asyncio.timeout(10):
        for number in range(20):
            assert await batches.submit(f"r{number}") == f"r{number} committed"
    assert committer.batches == [[f"r{number}"] for number in range(20)]


async def test_the_callers_of_the_last_commit_join_the_next_one() -> None:
    """The leader of the second commit waits for a, answered by the first, to come back:
    one transaction for all four callers' requests instead of two.
    """
    committer, _, _, _ = await _cohort_then_return(LONG)
    assert committer.batches == [["a1"], ["b", "c", "d", "a2"]]


async def test_without_a_delay_the_callers_stay_in_cohorts() -> None:
    committer, _, _, _ = await _cohort_then_return(0.0)
    assert committer.batches == [["a1"], ["b", "c", "d"], ["a2"]]


async def test_the_wait_ends_after_the_delay_when_a_caller_does_not_come_back() -> None:
    committer, batches, tasks = await _queued_behind_a_commit(0.05, "a1", "bcd")
    async with asyncio.timeout(10):
        await asyncio.gather(*tasks)
        # a stopped: the commit waited for it at most the delay; now three callers are seen,
        # and their next requests commit together without waiting.
        assert committer.batches == [["a1"], ["b", "c", "d"]]
        assert await asyncio.gather(*(batches.submit(f"{n}2") for n in "bcd")) == [
            f"{n}2 committed" for n in "bcd"
        ]
    assert committer.batches[2:] == [["b2", "c2", "d2"]]


async def test_a_commit_that_saw_many_callers_does_not_wait() -> None:
    """Past ``_FEW`` callers a commit is shared enough: the next one does not wait."""
    names = [f"r{number}" for number in range(batches_module._FEW)]
    committer, _, tasks = await _queued_behind_a_commit(LONG, "a", names)
    async with asyncio.timeout(10):
        await asyncio.gather(*tasks)
    assert committer.batches == [["a"], names]


async def test_after_a_pause_a_lone_request_does_not_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(batches_module, "_RECENT", 0.01)
    committer, batches, _, _ = await _cohort_then_return(LONG)
    loop = asyncio.get_running_loop()
    ended = loop.time()
    await wait_for(lambda: loop.time() > ended + 0.02)  # the four callers went quiet
    async with asyncio.timeout(10):
        assert await batches.submit("late") == "late committed"
    assert committer.batches[-1] == ["late"]


async def test_a_leader_cancelled_while_it_waits_commits_nothing_and_the_rest_go_on() -> None:
    lock = asyncio.Lock()
    committer = Committer(gates=1)
    batches: Batches[str, str] = Batches(lock, committer, 256, delay=0.2)
    first = asyncio.create_task(batches.submit("a1"))
    await wait_for(lambda: committer.started == 1)
    leader = asyncio.create_task(batches.submit("b"))
    others = [asyncio.create_task(batches.submit(name)) for name in "cd"]
    await wait_for(lambda: batches.queued == 3)
    committer.gates[0].set()
    async with asyncio.timeout(10):
        assert await first == "a1 committed"
        await wait_for(lambda: lock.locked())  # b holds the lock, waiting for a to return
        assert committer.started == 1
        leader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leader
        assert await asyncio.gather(*others) == ["c committed", "d committed"]
    assert committer.batches == [["a1"], ["c", "d"]]
    assert batches.queued == 0
