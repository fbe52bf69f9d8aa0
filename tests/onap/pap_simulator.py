"""A PAP simulator, written from ONAP's documented PDP/PAP interaction (policy-parent
``docs/pap/InternalPapPdp.rst`` and ``docs/development/pdp/pdp-pap-interaction.rst``): it talks
to PDPs only through a DMaaP Message Router's ``POLICY-PDP-PAP`` topic, as the PAP of the
DMaaP releases does.

- It reads the topic with a consumer group of its own and keeps every PDP_STATUS it sees.
- A PDP registers with a PDP_STATUS (no ``response``) naming its ``pdpGroup``; the PAP assigns
  it the subgroup of its ``pdpType`` with a PDP_UPDATE (subgroup, heartbeat interval, the
  subgroup's policies), then makes it ACTIVE with a PDP_STATE_CHANGE.
- Each PDP_UPDATE and PDP_STATE_CHANGE is answered by a PDP_STATUS whose
  ``response.responseTo`` is the request's ``requestId``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson

TOPIC = "POLICY-PDP-PAP"
SOURCE = "pap-simulator"

Status = dict[str, Any]


class PapSimulator:
    """The PAP's side of the dialogue, over a DMaaP MR that ``http`` reaches."""

    def __init__(self, http: httpx.AsyncClient, *, topic: str = TOPIC, group: str = "policy-pap"):
        self._http = http
        self.topic = topic
        self._group = group
        self.statuses: list[Status] = []
        self._arrived = asyncio.Condition()

    async def run(self) -> None:
        """Read the topic for ever, keeping each PDP_STATUS (a DMaaP consumer, 1 s polls)."""
        while True:
            try:
                r = await self._http.get(
                    f"/events/{self.topic}/{self._group}/1", params={"timeout": 1000}
                )
            except httpx.TransportError:
                await asyncio.sleep(0.05)
                continue
            if r.status_code == 404:  # no topic until the first message
                await asyncio.sleep(0.05)
                continue
            r.raise_for_status()
            received = [_decoded(item) for item in r.json()]
            async with self._arrived:
                self.statuses += [m for m in received if m.get("messageName") == "PDP_STATUS"]
                self._arrived.notify_all()

    async def send(self, message: dict[str, Any]) -> None:
        r = await self._http.post(f"/events/{self.topic}", json=message)
        r.raise_for_status()

    async def wait_status(
        self, matches: Callable[[Status], bool], *, after: int = 0, timeout: float = 10.0
    ) -> Status:
        """The first PDP_STATUS from index ``after`` on that ``matches``; fails past ``timeout``."""

        def found() -> Status | None:
            return next((s for s in self.statuses[after:] if matches(s)), None)

        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: found() is not None), timeout)
        status = found()
        assert status is not None
        return status

    async def registration(self, *, group: str, timeout: float = 10.0) -> Status:
        """A PDP's registration: a PDP_STATUS without a response that asks for ``group``."""
        return await self.wait_status(
            lambda s: "response" not in s and s.get("pdpGroup") == group, timeout=timeout
        )

    async def request(self, message: dict[str, Any], *, timeout: float = 10.0) -> Status:
        """Send a PDP_UPDATE or PDP_STATE_CHANGE and return the PDP_STATUS answering it."""
        request_id = message["requestId"]
        await self.send(message)
        return await self.wait_status(
            lambda s: (s.get("response") or {}).get("responseTo") == request_id, timeout=timeout
        )

    async def assign(
        self, status: Status, *, heartbeat_ms: int, policies: list[dict[str, Any]]
    ) -> tuple[Status, Status]:
        """What the PAP does for a registered PDP: a PDP_UPDATE into the subgroup of its type,
        then a PDP_STATE_CHANGE to ACTIVE; both answers.
        """
        updated = await self.request(
            update(
                status["name"],
                status["pdpGroup"],
                status["pdpType"],
                heartbeat_ms=heartbeat_ms,
                deploy=policies,
            )
        )
        activated = await self.request(state_change(status["name"], "ACTIVE"))
        return updated, activated


def _decoded(item: str) -> dict[str, Any]:
    """A message read, or {} for one that is no JSON object (the PAP's decoder skips those)."""
    try:
        message = orjson.loads(item)
    except orjson.JSONDecodeError:
        return {}
    return message if isinstance(message, dict) else {}


def _header(kind: str, name: str | None, group: str | None, subgroup: str | None) -> Status:
    message: Status = {
        "messageName": kind,
        "requestId": str(uuid.uuid4()),
        "timestampMs": int(time.time() * 1000),
        "source": SOURCE,
        "name": name,
        "pdpGroup": group,
        "pdpSubgroup": subgroup,
    }
    return {k: v for k, v in message.items() if v is not None}


def update(
    name: str | None,
    group: str | None,
    subgroup: str | None,
    *,
    heartbeat_ms: int | None = None,
    deploy: list[dict[str, Any]] | None = None,
    undeploy: list[dict[str, Any]] | None = None,
) -> Status:
    """A PDP_UPDATE of the delta generation (Honolulu on)."""
    message = _header("PDP_UPDATE", name, group, subgroup)
    if heartbeat_ms is not None:
        message["pdpHeartbeatIntervalMs"] = heartbeat_ms
    message["policiesToBeDeployed"] = deploy or []
    message["policiesToBeUndeployed"] = undeploy or []
    return message


def state_change(
    name: str | None, state: str, group: str | None = None, subgroup: str | None = None
) -> Status:
    """A PDP_STATE_CHANGE."""
    return {**_header("PDP_STATE_CHANGE", name, group, subgroup), "state": state}


@asynccontextmanager
async def running_pap(mr_url: str, **options: Any) -> AsyncIterator[PapSimulator]:
    """A PAP simulator reading the MR at ``mr_url`` for the duration of the block."""
    async with httpx.AsyncClient(base_url=mr_url, timeout=10) as http:
        pap = PapSimulator(http, **options)
        reader = asyncio.create_task(pap.run())
        try:
            yield pap
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
