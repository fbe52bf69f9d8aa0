"""Long synchronous work cut into slices: the event loop runs between them, and the published
marks of a push are recorded whole even when it is cancelled between slices.
"""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from policy_pubsub import slices as slices_module
from policy_pubsub.service.state import State, Subscription
from policy_pubsub.slices import CHECK_EVERY, Slices
from policy_pubsub.store import Store


async def test_work_in_slices_lets_the_event_loop_run_between_them() -> None:
    """A callback scheduled before the work starts runs before the work ends, at the end of
    a slice; not in the middle of one.
    """
    ran_at: list[int] = []
    done = 0
    asyncio.get_running_loop().call_soon(lambda: ran_at.append(done))
    slices = Slices(seconds=0)
    for _ in range(4 * CHECK_EVERY):
        done += 1
        if slices.due():
            await slices.pause()
    assert ran_at == [CHECK_EVERY]
    assert slices.pauses == 4


async def test_work_within_its_slice_time_runs_without_a_pause() -> None:
    slices = Slices(seconds=60)
    for _ in range(4 * CHECK_EVERY):
        if slices.due():
            await slices.pause()
    assert slices.pauses == 0


def _subscription(subscriber_id: str) -> Subscription:
    record = {
        "subscriber_id": subscriber_id,
        "subscriber_topic": f"topic-{subscriber_id}",
        "policy-filters": [{"policy-id": ["p"]}],
    }
    return Subscription.make(subscriber_id, record, revision=1, created_at=1, updated_at=1)


async def test_published_marks_cancelled_between_slices_are_recorded_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cancelled at a pause, the marking finishes at once: every subscription has its mark
    (the transaction that wrote them committed), then the cancellation goes through.
    """
    monkeypatch.setattr(slices_module, "CHECK_EVERY", 1)
    state = State(cast(Store, None))
    for n in range(100):
        state.subscription_put(_subscription(f"s{n}"))
    marks = {f"s{n}": 7 for n in range(100)}
    task = asyncio.create_task(state.published_in_slices(marks, 1234, Slices(seconds=0)))
    await asyncio.sleep(0)  # the task runs its first slice (one item) and pauses
    assert sum(s.last_revision == 7 for s in state.subscriptions.values()) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert {s.last_revision for s in state.subscriptions.values()} == {7}
    assert {s.last_published_at for s in state.subscriptions.values()} == {1234}
