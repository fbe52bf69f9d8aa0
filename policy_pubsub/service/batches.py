"""Requests that queue up behind a transaction commit together in the next one.

Policy changes and subscription changes both go this way: a request is queued; the first
queued request to get the state's write lock commits every queued request (up to a limit)
in one transaction, and each caller gets its own answer, as if its request had been alone.
One commit (one fsync) acknowledges them all.
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
    ) -> None:
        self._lock = lock
        self._commit = commit
        self._limit = limit
        self._queue: list[_Queued[Request, Answer]] = []

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
        try:
            async with self._lock:
                if not queued.answer.done():
                    batch = self._queue[: self._limit]
                    del self._queue[: self._limit]
                    await self._commit_and_answer(batch)
        except asyncio.CancelledError:
            if queued in self._queue:
                self._queue.remove(queued)
            raise
        return queued.answer.result()

    async def _commit_and_answer(self, batch: Sequence[_Queued[Request, Answer]]) -> None:
        """Commit the batch and answer each future, with its failure if it failed."""
        try:
            answers = await self._commit([queued.request for queued in batch])
        except BaseException as exc:
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
        for queued, answer in zip(batch, answers, strict=True):
            if isinstance(answer, PolicyPubSubError):
                queued.answer.set_exception(answer)
            else:
                queued.answer.set_result(answer)
