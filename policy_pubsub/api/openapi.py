"""``GET /openapi.json``: an OpenAPI 3.1 document of every endpoint of the route table.

Each operation is that of an endpoint (``policy_pubsub.api.routes``); the message schemas are
the hand-written JSON Schemas of ``schemas/v1``, embedded under ``components/schemas`` with
their ``$ref``s rewritten to point inside the document. Who needs credentials (the security
requirements, 401/403, the PAP webhook signature) and the error envelope follow each
endpoint's access rule and error shape.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import metadata
from typing import Any
from urllib.parse import urldefrag, urljoin

import orjson
from starlette.requests import Request
from starlette.responses import Response

from policy_pubsub import constants, schemas
from policy_pubsub.api import access
from policy_pubsub.api.errors import ErrorShape
from policy_pubsub.api.state import app_state
from policy_pubsub.api.table import JSON, Endpoint, Openness, RouteTable, Schema

TOPIC = constants.TOPIC_PATTERN


def component(name: str) -> str:
    """The component name of a schema file: ``policy-filter`` -> ``PolicyFilter``."""
    return "".join(part.capitalize() for part in name.split("-"))


def ref(name: str) -> Schema:
    """A reference to the embedded schema of ``schemas/v1/<name>.json``."""
    return {"$ref": f"#/components/schemas/{component(name)}"}


def _path_param(name: str, pattern: str, description: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "pattern": pattern},
    }


def _query(name: str, description: str, **schema: Any) -> Schema:
    return {"name": name, "in": "query", "description": description, "schema": schema}


PARAMETERS: dict[str, Schema] = {
    "subscriber_id": _path_param(
        "subscriber_id", constants.SUBSCRIBER_ID_PATTERN, "The subscriber: 1-255 of A-Za-z0-9._:-"
    ),
    "policy_id": _path_param(
        "policy_id", constants.POLICY_ID_PATTERN, "The policy-id: 1-255 of A-Za-z0-9._:-"
    ),
    "topic": _path_param("topic", constants.TOPIC_PATTERN, "The topic: 1-255 of A-Za-z0-9._-"),
    "consumer_group": _path_param(
        "consumer_group", constants.CONSUMER_PATTERN, "Each group reads every message once."
    ),
    "consumer_id": _path_param("consumer_id", constants.CONSUMER_PATTERN, "The consumer."),
    "abbrev": _query(
        "abbrev",
        "Keep only `type` and `metadata` of each policy (also: 1/0, yes/no, any case).",
        type="boolean",
        default=False,
    ),
    "policies": _query(
        "policies",
        "Also answer the subscriber's current policies under `policies`: the snapshot of "
        "`status.last_revision`, read together with it (also: 1/0, yes/no, any case).",
        type="boolean",
        default=False,
    ),
    "topicQuery": _query(
        "topic", "Only the subscriptions on this topic.", type="string", pattern=TOPIC
    ),
    "stale": _query(
        "stale",
        "Only those whose topic holds a message no consumer group read for this many seconds.",
        type="number",
        minimum=0,
        exclusiveMaximum=1_000_000_000,
    ),
    "timeout": _query(
        "timeout",
        "How long to wait for a message, in ms; clamped into the server's "
        "`min_poll_timeout_ms` (default 0) and `max_poll_timeout_ms` "
        f"(default {constants.MAX_POLL_TIMEOUT_MS}).",
        type="integer",
        minimum=0,
        maximum=1_000_000_000,
        default=constants.DEFAULT_POLL_TIMEOUT_MS,
    ),
    "limit": _query(
        "limit",
        "The most messages to answer.",
        type="integer",
        minimum=1,
        maximum=constants.MAX_POLL_LIMIT,
        default=constants.DEFAULT_POLL_LIMIT,
    ),
    "RequestId": {
        "name": constants.REQUEST_ID_HEADER,
        "in": "header",
        "description": "Echoed on the answer; one is made up when absent.",
        "schema": {"type": "string"},
    },
    "Signature": {
        "name": access.SIGNATURE_HEADER,
        "in": "header",
        "required": False,
        "description": "`t=<unix seconds>,nonce=<8-64 of [A-Za-z0-9_-]>,v1=<hex>`: `v1` is "
        "the HMAC-SHA256, with the shared secret, of `t`, `nonce`, the method, the path and "
        "query as sent, each followed by a newline, and then the body (README, Security). "
        "Required (else 401) only when the server has a `pap_webhook_secret`; refused when "
        "`t` is more than `pap_signature_window_seconds` (300) from the server's clock or "
        "the signature was accepted before. The legacy `sha256=<HMAC of the body>` is "
        "accepted only with `pap_signature_legacy`.",
        "schema": {"type": "string"},
    },
}

HEADERS: dict[str, Schema] = {
    "RequestId": {
        "description": "The request's `X-ONAP-RequestID`, or a new one.",
        "schema": {"type": "string"},
    },
    "RetryAfter": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer", "minimum": 0},
    },
    "WWWAuthenticate": {
        "description": "The accepted schemes: Basic, Bearer, or the PAP webhook's HMAC-SHA256.",
        "schema": {"type": "string"},
    },
}

# Authentication applies only when the server has an auth file (``--auth-file``); without
# one, no operation needs credentials. Who may call what: each endpoint's Access rule.
SECURITY_SCHEMES: dict[str, Schema] = {
    "basic": {
        "type": "http",
        "scheme": "basic",
        "description": "A user of the server's auth file and its password.",
    },
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "The `token` of a user of the server's auth file.",
    },
}
SECURITY: list[Schema] = [{"basic": []}, {"bearer": []}]

ERRORS: dict[int, str] = {
    400: "Malformed JSON, an invalid field, or an invalid path or query parameter; "
    "nothing was changed.",
    401: "Missing, malformed or wrong credentials (when the server has an auth file), or a "
    "missing or wrong PAP webhook signature (when it has a webhook secret); nothing was changed.",
    403: "The user's roles or topic patterns do not allow this request; nothing was changed.",
    404: "",  # Op.missing
    409: "The subscriber id is in use by a subscription on a topic this user may not use; "
    "nothing was changed.",
    413: "The body is larger than the server's limit, or (on a change of policies or "
    "subscriptions) a snapshot the change causes would be larger than the message router's "
    "largest message: the error names the subscribers, the snapshot size and the limit. "
    "Nothing was changed.",
    415: "The Content-Type is not JSON; nothing was changed.",
    429: "The consumer made more empty polls this minute than the server allows "
    "(`max_empty_polls_per_minute`); retry after `Retry-After` seconds, with a longer timeout.",
    503: "The store or the message router is unavailable, or the server holds as many "
    "long-polls as it allows; nothing was changed.",
}

TAGS = [
    {"name": "decision", "description": "The ONAP decision API."},
    {"name": "subscriptions", "description": "Subscribers and the topics their snapshots go to."},
    {"name": "pap", "description": "The PAP webhook: deploy and undeploy policies."},
    {"name": "message router", "description": "DMaaP Message Router compatible (embedded)."},
    {"name": "operations", "description": "Health and self-description."},
]


def _response(
    description: str,
    schema: Schema | None,
    retry: bool = False,
    media: str = JSON,
    challenge: bool = False,
) -> Schema:
    headers: dict[str, Schema] = {
        constants.REQUEST_ID_HEADER: {"$ref": "#/components/headers/RequestId"}
    }
    if retry:
        headers["Retry-After"] = {"$ref": "#/components/headers/RetryAfter"}
    if challenge:
        headers["WWW-Authenticate"] = {"$ref": "#/components/headers/WWWAuthenticate"}
    answer: Schema = {"description": description, "headers": headers}
    if schema is not None:
        answer["content"] = {media: {"schema": schema}}
    return answer


def _operation(endpoint: Endpoint) -> Schema:
    op, rule = endpoint.operation, endpoint.access
    names = [*re.findall(r"{(\w+)}", endpoint.path), *op.query, "RequestId"]
    if rule.signed:
        names.append("Signature")
    envelope = ref("mr-error" if endpoint.shape is ErrorShape.DMAAP else "error")
    # Open to anyone, also with an auth file (/metrics only with metrics_public: not here).
    always_open = rule.open is Openness.ALWAYS
    responses = {
        str(status): _response(text, body, media=op.ok_type)
        for status, (text, body) in op.ok.items()
    }
    errors = op.errors if always_open else (401, 403, *op.errors)
    for status in errors:
        text = op.missing if status == 404 else ERRORS[status]
        body = envelope
        if status in op.error_bodies:
            text, other = op.error_bodies[status]
            body = {"oneOf": [envelope, other]}
        responses[str(status)] = _response(
            text, body, retry=status in (429, 503), challenge=status == 401
        )
    operation: Schema = {
        "operationId": op.operation_id,
        "tags": [op.tag],
        "summary": op.summary,
        "parameters": [{"$ref": f"#/components/parameters/{name}"} for name in names],
        "responses": dict(sorted(responses.items())),
    }
    if always_open:
        operation["security"] = []
    if op.description:
        operation["description"] = op.description
    if op.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {media: {"schema": op.body} for media in op.body_types},
        }
    return operation


def _embed(name: str) -> Schema:
    """A schema of schemas/v1 as a component: no ``$id``/``$schema``, and every ``$ref``
    (relative to its file, or to another file) rewritten to a pointer into the document.
    """
    schema = schemas.load_schema(name)
    base = schema.pop("$id")
    schema.pop("$schema", None)
    embedded: Schema = _rewrite(schema, base)
    return embedded


def _rewrite(node: Any, base: str) -> Any:
    if isinstance(node, list):
        return [_rewrite(item, base) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _rewrite(value, base) for key, value in node.items()}
    target = node.get("$ref")
    if isinstance(target, str):
        document, fragment = urldefrag(urljoin(base, target))
        if not document.startswith(schemas.BASE_URI):
            raise ValueError(f"{base}: $ref {target!r} leaves {schemas.BASE_URI}")
        name = document.removeprefix(schemas.BASE_URI).removesuffix(".json")
        out["$ref"] = f"#/components/schemas/{component(name)}{fragment}"
    return out


def _version() -> str:
    try:
        return metadata.version("policy-pubsub")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from an unbuilt tree
        return "0+unknown"


@cache
def document(table: RouteTable) -> dict[str, Any]:
    """The OpenAPI document of ``table`` (built on first use, then shared: do not modify it)."""
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in table.endpoints:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint)
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "policy-pubsub",
            "version": _version(),
            "summary": "A durable publish/subscribe server for ONAP policies.",
            "description": "ONAP's decision API and PAP webhook, subscriptions that receive "
            "full policy snapshots on a topic, and a DMaaP Message Router compatible API. "
            "Errors outside `/events` and `/topics` have the ONAP shape (Error); those "
            "routes answer in the DMaaP shape (MrError). When the server has an auth file, "
            "every operation but /healthcheck and /openapi.json needs HTTP Basic or Bearer "
            "credentials (401 without, 403 when the user's roles or topics do not allow it; "
            "/metrics is open with `metrics_public`).",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": TAGS,
        "security": SECURITY,
        "paths": paths,
        "components": {
            "schemas": {component(name): _embed(name) for name in schemas.names()},
            "parameters": PARAMETERS,
            "headers": HEADERS,
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


@cache
def _body(table: RouteTable) -> bytes:
    return orjson.dumps(document(table))


async def openapi(request: Request) -> Response:
    """The document of the app's route table."""
    return Response(_body(app_state(request).routes), media_type=JSON)


__all__ = [
    "ERRORS",
    "HEADERS",
    "PARAMETERS",
    "SECURITY",
    "SECURITY_SCHEMES",
    "TAGS",
    "component",
    "document",
    "openapi",
    "ref",
]
