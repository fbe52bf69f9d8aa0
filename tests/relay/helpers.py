"""Outbox contents for the relay's tests: snapshots as the service writes them."""

from __future__ import annotations

from policy_pubsub.routers import OutMessage
from policy_pubsub.store import Store


def snapshot(subscriber: int, revision: int, topics: int = 10) -> OutMessage:
    """Subscriber ``s<subscriber>``'s snapshot of ``revision``, as the service writes it."""
    key = f"s{subscriber}"
    return OutMessage(
        topic=f"t{subscriber % topics}",
        body=f'{{"subscriber_id":"{key}","revision":{revision}}}',
        key=key,
        revision=revision,
        dedup_id=f"{key}@{revision}",
    )


async def fill_outbox(store: Store, subscribers: int, revisions: int) -> None:
    """Every subscriber's snapshot of revision 1, then of 2, ...: one transaction each, in
    revision order, as the changes would have committed them.
    """
    for revision in range(1, revisions + 1):
        async with store.write() as tx:
            await tx.outbox_add([snapshot(i, revision) for i in range(subscribers)], 0)


__all__ = ["fill_outbox", "snapshot"]
