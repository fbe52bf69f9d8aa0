"""The messages of ONAP's PDP/PAP dialogue on the ``POLICY-PDP-PAP`` topic, as a PDP reads and
writes them (onap/policy-models ``PdpMessage``, ``PdpStateChange``, ``PdpStatus``).

Every message carries ``messageName``, ``requestId``, ``timestampMs`` and the addressing fields
``name``, ``pdpGroup`` and ``pdpSubgroup``. A PDP handles a message named for it; a message with
no name is a broadcast to the PDPs of ``pdpGroup`` (and of ``pdpSubgroup`` when it is given),
and a PDP that has no subgroup yet takes no broadcast (``PdpMessage.appliesTo``). PDP_UPDATE's
body is the service's :class:`policy_pubsub.models.PdpUpdate`; this module holds what the PDP
side adds: the addressing, PDP_STATE_CHANGE and the PDP_STATUS it answers with.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

from policy_pubsub.service import Policy

PDP_STATUS = "PDP_STATUS"
PDP_UPDATE = "PDP_UPDATE"
PDP_STATE_CHANGE = "PDP_STATE_CHANGE"

PASSIVE = "PASSIVE"
ACTIVE = "ACTIVE"
TERMINATED = "TERMINATED"
#: ONAP's ``PdpState`` values; this PDP takes PASSIVE and ACTIVE and refuses the others.
PDP_STATES = ("PASSIVE", "SAFE", "TEST", "ACTIVE", "TERMINATED")
SETTABLE_STATES = (PASSIVE, ACTIVE)

HEALTHY = "HEALTHY"
SUCCESS = "SUCCESS"
FAIL = "FAIL"


@dataclass(frozen=True, slots=True)
class Addressing:
    """Who a PAP message is for: a PDP ``name``, else a broadcast to a group (and subgroup)."""

    name: str | None
    pdp_group: str | None
    pdp_subgroup: str | None

    @classmethod
    def of(cls, message: dict[str, Any]) -> Addressing:
        """The addressing fields of a decoded message; a field that is not a string counts as
        absent, as Java's decoder would leave it null.
        """

        def text(key: str) -> str | None:
            value = message.get(key)
            return value if isinstance(value, str) else None

        return cls(text("name"), text("pdpGroup"), text("pdpSubgroup"))

    def applies_to(self, name: str, group: str | None, subgroup: str | None) -> bool:
        """True when a PDP called ``name``, in ``group`` and ``subgroup``, handles the message
        (ONAP's ``PdpMessage.appliesTo``).
        """
        if self.name is not None:
            return self.name == name
        if group is None or subgroup is None:
            return False  # not assigned yet: no broadcast applies
        if self.pdp_group != group:
            return False
        return self.pdp_subgroup is None or self.pdp_subgroup == subgroup


class PdpStateChange(BaseModel):
    """An ONAP PDP_STATE_CHANGE: the PAP sets a PDP's administrative ``state``. The PAP's other
    fields (``source``, ``timestampMs``, ...) are accepted and ignored.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    message_name: Literal["PDP_STATE_CHANGE"] = Field(alias="messageName")
    request_id: StrictStr | None = Field(None, alias="requestId")
    name: StrictStr | None = None
    state: StrictStr

    @field_validator("state")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in PDP_STATES:
            raise ValueError(f"must be one of {', '.join(PDP_STATES)}, not {value!r}")
        return value


def policy_list(deployed: Sequence[Policy]) -> list[dict[str, str]]:
    """The ``policies`` of a PDP_STATUS: each deployed policy's name and version."""
    return [{"name": p.policy_id, "version": p.version} for p in deployed]


def pdp_status(
    *,
    name: str,
    pdp_type: str,
    group: str | None,
    subgroup: str | None,
    state: str,
    deployed: Sequence[Policy],
    revision: int,
    description: str | None = None,
) -> dict[str, Any]:
    """A PDP_STATUS as this PDP sends it: registration, heartbeat, or (with
    :func:`answering`) the answer to a PAP message. ``revision`` (ext) is the store's.
    """
    status: dict[str, Any] = {
        "messageName": PDP_STATUS,
        "requestId": str(uuid.uuid4()),
        "timestampMs": int(time.time() * 1000),
        "name": name,
        "pdpType": pdp_type,
        "state": state,
        "healthy": HEALTHY,
        "policies": policy_list(deployed),
        "revision": revision,
    }
    if description is not None:
        status["description"] = description
    if group is not None:
        status["pdpGroup"] = group
    if subgroup is not None:
        status["pdpSubgroup"] = subgroup
    return status


def answering(
    status: dict[str, Any], request_id: str | None, outcome: str, message: str
) -> dict[str, Any]:
    """``status`` as the answer to the PAP message ``request_id``."""
    return {
        **status,
        "response": {
            "responseTo": request_id,
            "responseStatus": outcome,
            "responseMessage": message,
        },
    }


__all__ = [
    "ACTIVE",
    "FAIL",
    "HEALTHY",
    "PASSIVE",
    "PDP_STATES",
    "PDP_STATE_CHANGE",
    "PDP_STATUS",
    "PDP_UPDATE",
    "SETTABLE_STATES",
    "SUCCESS",
    "TERMINATED",
    "Addressing",
    "PdpStateChange",
    "answering",
    "pdp_status",
    "policy_list",
]
