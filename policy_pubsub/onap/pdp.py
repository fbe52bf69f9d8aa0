"""This server as one PDP of an ONAP PAP: its identity, its state, and what it answers to each
message of the PDP/PAP dialogue.

The :class:`Pdp` is the dialogue without the transport: :meth:`Pdp.handle` takes one message
as read from ``POLICY-PDP-PAP`` and returns the PDP_STATUS to send back, or None when the
message is not for this PDP. :mod:`policy_pubsub.onap.channel` moves the messages; the PAP
webhook calls :meth:`Pdp.state_change` for a PDP_STATE_CHANGE posted to it.

What it does, as ONAP's PDPs do (policy-xacml-pdp ``XacmlState`` and its listeners):

- It starts PASSIVE, in its configured ``pdpGroup``, with no subgroup. Its first PDP_STATUS
  registers it; the PAP answers with a PDP_UPDATE that assigns a subgroup, a heartbeat
  interval and the subgroup's policies, then a PDP_STATE_CHANGE to ACTIVE.
- A PDP_UPDATE sets the subgroup (the PAP's, even none) and the heartbeat interval (when it
  gives one above zero), and deploys and undeploys through the service, whatever the state:
  the change is committed, with every snapshot it causes, before the answer is made.
- A PDP_STATE_CHANGE to PASSIVE or ACTIVE sets the state; SAFE, TEST and TERMINATED are
  refused (FAIL) and change nothing. Group and subgroup are not taken from it: a state change
  names them only to broadcast.
- PDP_STATUS messages (its own and other PDPs'), messages for another PDP name and
  broadcasts to a group or subgroup it is not in are ignored.
- A message that is not JSON, not an object, or of an unknown kind is skipped, logged once;
  one for this PDP that breaks its format gets a FAIL answer naming the fault.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from policy_pubsub.api.wire import pdp_refused, pdp_status
from policy_pubsub.exceptions import InvalidRequest, NotFound, SnapshotTooLarge
from policy_pubsub.models import PdpUpdate
from policy_pubsub.onap import messages
from policy_pubsub.onap.messages import Addressing, PdpStateChange
from policy_pubsub.service import PolicyService

log = logging.getLogger(__name__)

#: ONAP's PDPs beat every minute until their PAP says otherwise (XacmlPdpHearbeatPublisher).
DEFAULT_HEARTBEAT_MS = 60_000
#: How much of a refused message's reason goes in a log line or a FAIL answer.
REASON_CHARS = 500


@dataclass(frozen=True, slots=True)
class PdpIdentity:
    """What the PAP knows this PDP by: its unique ``name``, its ``pdp_type`` (the PAP assigns
    it to the subgroup of that type) and the ``group`` it asks to join.
    """

    name: str
    pdp_type: str
    group: str


class Pdp:
    """The PDP side of ONAP's PDP/PAP dialogue over one :class:`PolicyService`."""

    def __init__(
        self,
        service: PolicyService,
        identity: PdpIdentity,
        *,
        state: str = messages.PASSIVE,
        heartbeat_ms: int = DEFAULT_HEARTBEAT_MS,
        max_policies: int | None = None,
    ) -> None:
        self._service = service
        self.identity = identity
        self.state: str = state
        self.subgroup: str | None = None
        self.heartbeat_ms = heartbeat_ms
        self._max_policies = max_policies

    async def status(self, description: str | None = None) -> dict[str, Any]:
        """A PDP_STATUS with no response: the registration and each heartbeat."""
        return messages.pdp_status(
            name=self.identity.name,
            pdp_type=self.identity.pdp_type,
            group=self.identity.group,
            subgroup=self.subgroup,
            state=self.state,
            deployed=await self._service.policies(),
            revision=self._service.revision,
            description=description,
        )

    async def terminated(self) -> dict[str, Any]:
        """The PDP_STATUS a PDP sends when it stops: state TERMINATED (the PAP forgets it)."""
        self.state = messages.TERMINATED
        return await self.status("stopping")

    async def handle(self, text: str) -> dict[str, Any] | None:
        """The answer to one message read from the PAP's topic, or None when the message is
        not for this PDP (or not a message at all: then it is logged). Raises only when the
        store or the router is unavailable: the message should be read again later.
        """
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            log.warning("skipped a message on the PAP topic that is not JSON: %s", exc)
            return None
        if not isinstance(message, dict):
            log.warning("skipped a message on the PAP topic that is not a JSON object")
            return None
        kind = message.get("messageName")
        if kind in (messages.PDP_STATUS, "PDP_TOPIC_CHECK", "PDP_HEALTH_CHECK"):
            return None  # PDPs' own reports, and probes PAP answers itself
        if kind not in (messages.PDP_UPDATE, messages.PDP_STATE_CHANGE):
            log.warning("skipped a message on the PAP topic of unknown kind %r", _short(kind))
            return None
        addressing = Addressing.of(message)
        if not addressing.applies_to(self.identity.name, self.identity.group, self.subgroup):
            return None
        if kind == messages.PDP_UPDATE:
            return await self._update_message(message)
        return await self._state_change_message(message)

    async def _update_message(self, message: dict[str, Any]) -> dict[str, Any]:
        try:
            update = PdpUpdate.model_validate(message)
            self._check_size(update)
        except (ValidationError, InvalidRequest) as exc:
            return await self._refused(message, messages.PDP_UPDATE, exc)
        return await self.update(update)

    async def _state_change_message(self, message: dict[str, Any]) -> dict[str, Any]:
        try:
            change = PdpStateChange.model_validate(message)
        except ValidationError as exc:
            return await self._refused(message, messages.PDP_STATE_CHANGE, exc)
        return await self.state_change(change)

    async def update(self, update: PdpUpdate) -> dict[str, Any]:
        """Apply a PDP_UPDATE for this PDP and answer it; the change is committed (with its
        snapshots) when this returns. An update the service refuses (a snapshot the router
        could not carry, a request it finds invalid) is a FAIL that changed nothing.
        """
        self.subgroup = update.pdp_subgroup
        interval = update.pdp_heartbeat_interval_ms
        if interval is not None and interval > 0:
            self.heartbeat_ms = interval
        try:
            result = await self._service.pdp_update(update)
        except (SnapshotTooLarge, InvalidRequest, NotFound) as exc:
            # Refused, nothing changed: the PAP reads why from the FAIL.
            log.warning("refused PDP_UPDATE %s: %s", update.request_id, exc.message)
            deployed = await self._service.policies()
            answer = pdp_refused(update, exc.message, self._service.revision, deployed)
            return self._as_this_pdp(answer)
        answer = pdp_status(update, result, await self._service.policies())
        return self._as_this_pdp(answer)

    async def state_change(self, change: PdpStateChange) -> dict[str, Any]:
        """Take a PDP_STATE_CHANGE and answer it: PASSIVE and ACTIVE are taken, other states
        refused (FAIL) with the state unchanged.
        """
        if change.state not in messages.SETTABLE_STATES:
            outcome, reason = messages.FAIL, f"state {change.state} is not supported"
        else:
            if change.state != self.state:
                log.info("PDP %s: state %s -> %s", self.identity.name, self.state, change.state)
            self.state = change.state
            outcome, reason = messages.SUCCESS, f"state {self.state}"
        return messages.answering(await self.status(), change.request_id, outcome, reason)

    def _check_size(self, update: PdpUpdate) -> None:
        if self._max_policies is None:
            return
        for field, listed in (
            ("policies", update.policies),
            ("policiesToBeDeployed", update.policies_to_be_deployed),
            ("policiesToBeUndeployed", update.policies_to_be_undeployed),
        ):
            if len(listed or ()) > self._max_policies:
                raise InvalidRequest(
                    f"{field}: more than {self._max_policies} policies in one update"
                )

    async def _refused(
        self, message: dict[str, Any], kind: str, exc: ValidationError | InvalidRequest
    ) -> dict[str, Any]:
        reason = _short(_reason(exc), REASON_CHARS)
        request_id = message.get("requestId")
        request_id = request_id if isinstance(request_id, str) else None
        log.warning("refused %s %s: %s", kind, request_id, reason)
        status = await self.status()
        return messages.answering(status, request_id, messages.FAIL, f"{kind} refused: {reason}")

    def _as_this_pdp(self, answer: dict[str, Any]) -> dict[str, Any]:
        """The webhook's answer to a PDP_UPDATE, said by this PDP: its name, type, state,
        group and subgroup.
        """
        answer.pop("pdpSubgroup", None)
        answer.update(
            name=self.identity.name,
            pdpType=self.identity.pdp_type,
            state=self.state,
            pdpGroup=self.identity.group,
        )
        if self.subgroup is not None:
            answer["pdpSubgroup"] = self.subgroup
        return answer


def _reason(exc: ValidationError | InvalidRequest) -> str:
    if isinstance(exc, InvalidRequest):
        return exc.message
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"])
        parts.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
    return "; ".join(parts)


def _short(value: object, limit: int = 80) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = ["DEFAULT_HEARTBEAT_MS", "Pdp", "PdpIdentity"]
