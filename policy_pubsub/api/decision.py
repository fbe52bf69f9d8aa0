"""The decision API: ``POST /policy/pdpx/v1/decision`` and its alias ``POST /decision/v1``."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from policy_pubsub import constants
from policy_pubsub.api.body import flag, read_model
from policy_pubsub.api.errors import ApiError, json_response
from policy_pubsub.api.limits import limits
from policy_pubsub.api.state import app_state
from policy_pubsub.logs import READ, mark_request
from policy_pubsub.models import DecisionRequest


async def decide(request: Request) -> Response:
    mark_request(request.scope, READ)  # a POST that changes nothing: logged as a read
    decision = await read_model(request, DecisionRequest)
    if decision.resource is not None:
        limits(request).check_filters([decision.resource], "resource", single=True)
    else:
        limits(request).check_filters(decision.filters(), "policy-filters")
    if decision.action != constants.ACTION_CONFIGURE:
        raise ApiError(400, f"No application for action {decision.action}")
    abbrev = flag(request, "abbrev")
    policies = await app_state(request).service.decide(decision.filters())
    if abbrev:
        policies = {pid: _abbreviate(body) for pid, body in policies.items()}
    return json_response({"policies": policies})


def _abbreviate(policy: dict[str, Any]) -> dict[str, Any]:
    return {key: policy[key] for key in ("type", "metadata") if key in policy}


__all__ = ["decide"]
