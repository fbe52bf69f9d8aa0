"""The PAP webhook: ``/pap/v1/pdp-update`` and ``/pap/v1/policies``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from policy_pubsub.api import validation
from policy_pubsub.api.body import read_model
from policy_pubsub.api.errors import json_response
from policy_pubsub.api.routing import route
from policy_pubsub.models import PdpUpdate, PolicyPush
from policy_pubsub.service import PolicyService, pdp_status


def _service(request: Request) -> PolicyService:
    service: PolicyService = request.app.state.service
    return service


async def pdp_update(request: Request) -> Response:
    update = await read_model(request, PdpUpdate)
    service = _service(request)
    result = await service.pdp_update(update)
    return json_response(pdp_status(update, result, service.policies()))


async def deploy(request: Request) -> Response:
    push = await read_model(request, PolicyPush)
    result = await _service(request).deploy(push.policies)
    return json_response(result.to_wire())


async def undeploy(request: Request) -> Response:
    result = await _service(request).undeploy(validation.policy_id(request))
    return json_response(result.to_wire())


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
                for p in _service(request).policies()
            ]
        }
    )


async def show(request: Request) -> Response:
    return json_response(_service(request).policy(validation.policy_id(request)).body)


routes = [
    route("/pap/v1/pdp-update", POST=pdp_update),
    route("/pap/v1/policies", POST=deploy, GET=listing),
    route("/pap/v1/policies/{policy_id}", GET=show, DELETE=undeploy),
]
