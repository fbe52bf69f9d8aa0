"""The PAP webhook: ``/pap/v1/pdp-update`` and ``/pap/v1/policies``."""

from __future__ import annotations

import functools
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from policy_pubsub.api import validation
from policy_pubsub.api.body import read_json, read_model, to_model
from policy_pubsub.api.errors import ApiError, json_response
from policy_pubsub.api.limits import limits
from policy_pubsub.api.state import app_state
from policy_pubsub.api.table import Handler
from policy_pubsub.api.wire import change_result, pdp_refused, pdp_status
from policy_pubsub.exceptions import SnapshotTooLarge
from policy_pubsub.models import PdpUpdate, PolicyPush
from policy_pubsub.onap.messages import PDP_STATE_CHANGE, SETTABLE_STATES, PdpStateChange
from policy_pubsub.service import ChangeResult, PolicyService


def _service(request: Request) -> PolicyService:
    return app_state(request).service


def _push(handler: Handler) -> Handler:
    """Counts a push's outcome in ``policy_pubsub_pushes_total``."""

    @functools.wraps(handler)
    async def counted(request: Request) -> Response:
        metrics = app_state(request).metrics
        try:
            return await handler(request)
        except Exception as exc:
            metrics.push_failed(exc)
            raise

    return counted


def _pushed(request: Request, result: ChangeResult) -> None:
    app_state(request).metrics.pushed(bool(result.deployed or result.undeployed), result.notified)


@_push
async def pdp_update(request: Request) -> Response:
    """A PDP_UPDATE, or a PDP_STATE_CHANGE: the PAP's two messages to a PDP."""
    body = await read_json(request)
    if isinstance(body, dict) and body.get("messageName") == PDP_STATE_CHANGE:
        return await _state_change(request, body)
    update = to_model(body, PdpUpdate)
    for field, listed in (
        ("policies", update.policies),
        ("policiesToBeDeployed", update.policies_to_be_deployed),
        ("policiesToBeUndeployed", update.policies_to_be_undeployed),
    ):
        limits(request).check_policies(len(listed or ()), field)
    service = _service(request)
    try:
        result = await service.pdp_update(update)
    except SnapshotTooLarge as exc:
        # A PAP reads the outcome of an update from its PDP_STATUS, so the refusal is one.
        metrics = app_state(request).metrics
        metrics.push_failed(exc)
        metrics.domain_error(exc)
        deployed = await service.policies()
        return json_response(pdp_refused(update, exc.message, service.revision, deployed), 413)
    _pushed(request, result)
    status = pdp_status(update, result, await service.policies())
    status["state"] = app_state(request).pdp.state  # as PDP_STATE_CHANGE last set it
    return json_response(status)


async def _state_change(request: Request, body: dict[str, Any]) -> Response:
    """A PDP_STATE_CHANGE, taken by the server's PDP as one read from the PAP's topic."""
    change = to_model(body, PdpStateChange)
    if change.state not in SETTABLE_STATES:
        raise ApiError(
            400, f"state: {change.state} is not supported; use {' or '.join(SETTABLE_STATES)}."
        )
    pdp = app_state(request).pdp
    return json_response(await pdp.state_change(change))


@_push
async def deploy(request: Request) -> Response:
    push = await read_model(request, PolicyPush)
    limits(request).check_policies(len(push.policies), "policies")
    result = await _service(request).deploy(push.policies)
    _pushed(request, result)
    return json_response(change_result(result))


@_push
async def undeploy(request: Request) -> Response:
    result = await _service(request).undeploy(validation.policy_id(request))
    _pushed(request, result)
    return json_response(change_result(result))


async def listing(request: Request) -> Response:
    return json_response(
        {
            "policies": [
                {
                    "policy-id": p.policy_id,
                    "policy-version": p.version,
                    "policy-type": p.type,
                    "policy-type-version": p.type_version,
                }
                for p in await _service(request).policies()
            ]
        }
    )


async def show(request: Request) -> Response:
    return json_response((await _service(request).policy(validation.policy_id(request))).body)


__all__ = ["deploy", "listing", "pdp_update", "show", "undeploy"]
