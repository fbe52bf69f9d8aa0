"""The decision API: ``POST /policy/pdpx/v1/decision`` and its alias ``POST /decision/v1``."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from policy_pubsub import constants
from policy_pubsub.api.body import flag, read_json, to_model
from policy_pubsub.api.errors import ApiError, json_response
from policy_pubsub.api.state import app_state
from policy_pubsub.logs import READ, mark_request
from policy_pubsub.models import DecisionRequest


async def decide(request: Request) -> Response:
    mark_request(request.scope, READ)  # a POST that changes nothing: logged as a read
    body = await read_json(request)
    action = body.get("action") if isinstance(body, dict) else None
    if isinstance(action, str) and action != constants.ACTION_CONFIGURE:
        # ONAP's PDP checks the action before the rest: a guard request, whose resource is
        # {"guard": {...}}, is told that no application takes it, not that "guard" is unknown.
        raise ApiError(400, f"No application for action {action}")
    decision = to_model(body, DecisionRequest)
    state = app_state(request)
    filters = decision.filters()
    if decision.resource is not None:
        state.limits.check_filters([decision.resource], "resource", single=True)
    else:
        state.limits.check_filters(filters, "policy-filters")
    abbrev = flag(request, "abbrev")
    policies = await state.service.decide(filters)
    if abbrev:
        policies = {pid: _abbreviate(body) for pid, body in policies.items()}
    return json_response({"policies": policies})


def _abbreviate(policy: dict[str, Any]) -> dict[str, Any]:
    return {key: policy[key] for key in ("type", "metadata") if key in policy}


__all__ = ["decide"]
