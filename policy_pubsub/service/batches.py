"""Requests that queue up behind a transaction commit together in the next one.

Policy changes and subscription changes both go this way: a request is queued; the first
queued request to get the state's write lock commits every queued request (up to a limit)
in one transaction, and each caller gets its own answer, as if its request had been alone.
One commit (one fsync) acknowledges them all.

Commit delay. Callers that push one request after another, each waiting for its answer, fall
into cohorts: those answered by one commit send their next requests while the next commit
(the others') runs, so each commit carries only its own cohort's. With a ``delay``, the
request that takes the lock waits before it commits until as many requests are queued as the
last commit saw (those it answered plus those queued as it ended), or the delay ends,
whichever comes first. It waits only when more were seen than are queued, no more than
``_FEW``, and the last commit ended within ``_RECENT`` (callers are pushing back to back): a
lone caller never waits, nor does anyone after a lone commit, and a caller that stopped costs
the next commit one delay at most, once. Every request is still answered only after its own
transaction committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from policy_pubsub.exceptions import PolicyPubSubError, StoreUnavailable

__all__ = ["Batches"]

Request = TypeVar("Request")
Answer = TypeVar("Answer")

#: A commit waits for the callers of the last one only if it ended less than this ago (s).
_RECENT = 0.05
#: ... and only if the last one saw at most this many requests: a commit of more shares its
#: cost among enough of them already, and waiting would stop it overlapping the requests'
#: round trips (with 32 clients, batches of about 22 grew to 27 and pushes/s fell).
_FEW = 8


@dataclass(slots=True)
class _Queued(Generic[Request, Answer]):
    """A request waiting for a transaction, and the future its caller awaits."""

    request: Request
    answer: asyncio.Future[Answer]


class Batches(Generic[Request, Answer]):
    """Queues requests and commits those queued together with ``commit``, which answers
    each one (or refuses it with a ``PolicyPubSubError``), in order, holding ``lock``.
    """

    def __init__(
        self,
        lock: asyncio.Lock,
        commit: Callable[[Sequence[Request]], Awaitable[Sequence[Answer | PolicyPubSubError]]],
        limit: int,
        *,
        delay: float = 0.0,
    ) -> None:
        self._lock = lock
        self._commit = commit
        self._limit = limit
        self._delay = delay  # longest wait for more requests before a commit (s); 0: none
        self._queue: list[_Queued[Request, Answer]] = []
        self._seen = 1  # requests answered by the last commit plus those queued as it ended
        self._ended = float("-inf")  # the event loop's time when the last commit ended
        self._want = 0  # queued requests that end the wait
        self._full: asyncio.Future[None] | None = None  # set once ``_want`` are queued

    @property
    def queued(self) -> int:
        """How many requests wait for a transaction."""
        return len(self._queue)

    async def submit(self, request: Request) -> Answer:
        """Queue the request, and return its answer once it committed with whatever else
        was queued (or raise its refusal, or the transaction's failure).
        """
        queued: _Queued[Request, Answer] = _Queued(
            request, asyncio.get_running_loop().create_future()
        )
        self._queue.append(queued)
        full = self._full
        if full is not None and len(self._queue) >= self._want and not full.done():
            full.set_result(None)
        try:
            async with self._lock:
                if not queued.answer.done():
                    if self._delay > 0:
                        await self._gather()
                    batch = self._queue[: self._limit]
                    del self._queue[: self._limit]
                    await self._commit_and_answer(batch)
        except asyncio.CancelledError:
            if queued in self._queue:
                self._queue.remove(queued)
            raise
        return queued.answer.result()

    async def _gather(self) -> None:
        """Holding the lock: wait (at most the delay) until as many requests are queued as
        the last commit saw, if it saw more than are queued and ended recently.
        """
        loop = asyncio.get_running_loop()
        want = min(self._seen, self._limit)
        if len(self._queue) >= want or want > _FEW or loop.time() - self._ended > _RECENT:
            return
        full: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(self._delay, _settle, full)
        self._want, self._full = want, full
        try:
            await full
        finally:
            timer.cancel()
            self._full = None

    async def _commit_and_answer(self, batch: Sequence[_Queued[Request, Answer]]) -> None:
        """Commit the batch and answer each future, with its failure if it failed."""
        try:
            answers = await self._commit([queued.request for queued in batch])
        except BaseException as exc:
            self._ended = float("-inf")  # after a failure, the next commit does not wait
            failure: Exception = (
                exc
                if isinstance(exc, Exception)
                else StoreUnavailable("the transaction was interrupted; nothing was changed")
            )
            for queued in batch:
                if not queued.answer.done():
                    queued.answer.set_exception(failure)
            if not isinstance(exc, Exception):
                raise
            return
        self._seen = len(batch) + len(self._queue)
        self._ended = asyncio.get_running_loop().time()
        for queued, answer in zip(batch, answers, strict=True):
            if isinstance(answer, PolicyPubSubError):
                queued.answer.set_exception(answer)
            else:
                queued.answer.set_result(answer)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
