"""The PAP webhook's replay cache: signatures already accepted, until they expire."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import delete

from policy_pubsub.store import dialects
from policy_pubsub.store.tables import pap_signatures

if TYPE_CHECKING:
    from policy_pubsub.store.database import Store


class SignatureRepository:
    """Accepted webhook signatures (``store.signatures``), each kept until ``expires_at``
    (milliseconds since the epoch). The table is shared by every replica of the store, so a
    signature is accepted once across all of them.
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    async def first_use(self, digest: str, expires_at: int) -> bool:
        """Record ``digest``; True when it was not recorded yet, False when it was (a
        replay). Two callers racing with one digest, on any replicas: exactly one gets True.
        ``StoreUnavailable`` when the store cannot say.
        """
        async with self._store.write() as tx:
            result = await tx.conn.execute(
                dialects.insert_ignore(self._store.dialect, pap_signatures).values(
                    digest=digest, expires_at=expires_at
                )
            )
            return result.rowcount == 1

    async def prune(self, now: int) -> int:
        """Forget the signatures that expired before ``now``; how many went."""
        async with self._store.write() as tx:
            result = await tx.conn.execute(
                delete(pap_signatures).where(pap_signatures.c.expires_at < now)
            )
            return int(result.rowcount or 0)


__all__ = ["SignatureRepository"]
