"""``GET /openapi.json``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from policy_pubsub.api.errors import json_response


async def openapi(request: Request) -> Response:
    return json_response(
        {"openapi": "3.1.0", "info": {"title": "policy-pubsub", "version": "1"}, "paths": {}}
    )


routes = [Route("/openapi.json", openapi, methods=["GET"])]
