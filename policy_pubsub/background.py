"""Background work that runs on one replica at a time.

Retention and compaction of the embedded router's topics and the expiry of stale
subscriptions are the same job on every replica of a shared store: done by all of them at
once they would race for the same deletes. A :class:`Periodic` job runs its work every
``interval`` seconds only while this process holds the job's leader lock in the store (the
kind the outbox relay holds, kept on a connection of its own, so it is freed when the holder
dies); the others wait their turn and take over within an interval. On SQLite, one process
owns the store and always leads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from policy_pubsub.exceptions import StoreUnavailable
from policy_pubsub.store import Store, leadership, now_ms
from policy_pubsub.tasks import cancelled

log = logging.getLogger(__name__)


class Periodic:
    """Runs ``work`` every ``interval`` seconds while this process leads ``name``; an error
    of ``expected`` kinds is logged as a warning and retried at the next interval.
    """

    def __init__(
        self,
        name: str,
        store: Store,
        work: Callable[[], Awaitable[object]],
        *,
        interval: float,
        expected: tuple[type[Exception], ...] = (),
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be a positive number of seconds")
        self.name = name
        self._store = store
        self._work = work
        self._interval = interval
        self._expected = expected
        self._task: asyncio.Task[None] | None = None
        self.leading = False

    def start(self) -> None:
        """Start in the running event loop; the first run is one interval away."""
        self._task = asyncio.create_task(self._run(), name=f"policy-pubsub {self.name}")

    async def close(self) -> None:
        """Stop, and give up the lock (another replica takes over)."""
        task, self._task = self._task, None
        await cancelled(task)

    async def _run(self) -> None:
        async with leadership(self._store, self.name) as lock:
            while True:
                await asyncio.sleep(self._interval)
                leading = await lock.acquire()
                if leading != self.leading:
                    self.leading = leading
                    if self._store.shared:
                        who = "this replica" if leading else "another replica"
                        log.info("%s: %s runs it", self.name, who)
                if not leading:
                    continue
                try:
                    await self._work()
                except self._expected as exc:
                    log.warning("%s failed, will retry: %s", self.name, exc)
                except Exception:
                    log.exception("%s failed, will retry", self.name)


#: How long the store's change log keeps what each revision changed, unless told
#: (``change_log_keep_seconds``). A replica that comes back to the store within this time
#: (from a lost notification connection, a network partition, a pause) reads only what
#: changed; one away longer reads everything again. A connected replica follows within a
#: moment, so this only bounds an outage.
CHANGE_LOG_KEEP_SECONDS = 3600.0


async def prune_change_log(store: Store, keep_seconds: float = CHANGE_LOG_KEEP_SECONDS) -> int:
    """Drop what the store's change log holds for longer than ``keep_seconds``; how many
    entries were dropped.
    """
    dropped = await store.state.prune_log(now_ms() - int(keep_seconds * 1000))
    if dropped:
        log.debug("dropped %d change log entries", dropped)
    return dropped


def change_log_pruning(
    store: Store, *, interval: float, keep_seconds: float = CHANGE_LOG_KEEP_SECONDS
) -> Periodic:
    """The job that prunes what the change log holds for longer than ``keep_seconds`` every
    ``interval`` seconds, on one replica at a time.
    """
    return Periodic(
        "change log pruning",
        store,
        lambda: prune_change_log(store, keep_seconds),
        interval=interval,
        expected=(StoreUnavailable,),
    )


__all__ = ["CHANGE_LOG_KEEP_SECONDS", "Periodic", "change_log_pruning", "prune_change_log"]
