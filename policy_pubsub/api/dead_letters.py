"""``GET /dead-letters`` and ``POST /dead-letters/retry``: the messages the router refused
for good, and sending their subscribers a fresh snapshot (``policy-pubsub dead-letters``).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from policy_pubsub.api.body import read_model
from policy_pubsub.api.errors import json_response
from policy_pubsub.api.state import app_state
from policy_pubsub.models import DeadLetterRetry
from policy_pubsub.store import DeadLetter
from policy_pubsub.timestamps import rfc3339


def to_wire(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter as ``dead-letter-list.json`` describes it."""
    return {
        "id": letter.id,
        "subscriber_id": letter.subscriber_id,
        "topic": letter.topic,
        "revision": letter.revision,
        "size": letter.size,
        "reason": letter.reason,
        "dedup_id": letter.dedup_id,
        "refused_at": rfc3339(letter.refused_at),
        "superseded_by": letter.superseded_by,
    }


async def listing(request: Request) -> Response:
    letters = await app_state(request).store.dead_letters.listing()
    return json_response({"dead_letters": [to_wire(letter) for letter in letters]})


async def retry(request: Request) -> Response:
    """A fresh snapshot, at a new revision, for the named subscribers (or every one with a
    dead letter); their dead letters are removed in the same transaction.
    """
    body = await read_model(request, DeadLetterRetry)
    state = app_state(request)
    wanted = body.subscriber_ids
    if wanted is None:
        letters = await state.store.dead_letters.listing()
        wanted = sorted({d.subscriber_id for d in letters if d.subscriber_id is not None})
    resent = await state.service.resend(wanted)
    return json_response(
        {
            "revision": resent.revision,
            "subscriber_ids": resent.subscriber_ids,
            "unknown": resent.unknown,
            "removed": resent.removed,
        }
    )


__all__ = ["listing", "retry", "to_wire"]
