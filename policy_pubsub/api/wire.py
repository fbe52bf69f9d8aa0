"""The answers of the PAP webhook as they go on the wire: a change's result, and the
PDP_STATUS that answers a PDP_UPDATE.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from policy_pubsub import constants
from policy_pubsub.models import PdpUpdate
from policy_pubsub.onap import messages
from policy_pubsub.service import ChangeResult, Policy

__all__ = ["change_result", "not_deployed_sentence", "pdp_refused", "pdp_status"]


def change_result(result: ChangeResult) -> dict[str, Any]:
    """The answer to a push or a delete: the revision, what changed, how many were notified."""
    return {
        "revision": result.revision,
        "deployed": result.deployed,
        "undeployed": result.undeployed,
        "notified": result.notified,
    }


def pdp_status(
    update: PdpUpdate, result: ChangeResult, deployed: Sequence[Policy]
) -> dict[str, Any]:
    """The PDP_STATUS answer to a PDP_UPDATE: SUCCESS, as ONAP's PDPs answer, with what was
    done in words; an undeployment that found nothing to undeploy is named there, and
    ``policies`` lists what is deployed now.
    """
    if result.deployed or result.undeployed:
        message = (
            f"deployed {_count(len(result.deployed), 'policy', 'policies')} and undeployed "
            f"{_count(len(result.undeployed), 'policy', 'policies')} at revision "
            f"{result.revision}; {_count(result.notified, 'subscriber', 'subscribers')} notified"
        )
    else:
        message = f"no change; revision {result.revision}"
    if result.not_deployed:
        message += "; " + not_deployed_sentence(result.not_deployed)
    return _status(update, "SUCCESS", message, result.revision, result.notified, deployed)


def not_deployed_sentence(absent: Sequence[dict[str, str | None]]) -> str:
    """Says which undeployments found nothing to undeploy, and what is deployed instead."""
    parts = []
    for item in absent:
        asked = (
            f"{item['name']}" if item["version"] is None else f"{item['name']} {item['version']}"
        )
        instead = "" if item["deployed"] is None else f" ({item['deployed']} is deployed)"
        parts.append(asked + instead)
    return "not deployed, so not undeployed: " + ", ".join(parts)


def pdp_refused(
    update: PdpUpdate, reason: str, revision: int, deployed: Sequence[Policy]
) -> dict[str, Any]:
    """The PDP_STATUS answer to a PDP_UPDATE that was refused and changed nothing: ``FAIL``
    with the reason, the store's ``revision`` as it was, the policies deployed as they were.
    """
    return _status(update, "FAIL", reason, revision, 0, deployed)


def _status(
    update: PdpUpdate,
    outcome: str,
    message: str,
    revision: int,
    notified: int,
    deployed: Sequence[Policy],
) -> dict[str, Any]:
    status = messages.pdp_status(
        name=update.name or constants.SERVICE_NAME,
        pdp_type=constants.PDP_TYPE,
        group=update.pdp_group,
        subgroup=update.pdp_subgroup,
        state=messages.ACTIVE,
        deployed=deployed,
        revision=revision,
    )
    return {**messages.answering(status, update.request_id, outcome, message), "notified": notified}


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"
