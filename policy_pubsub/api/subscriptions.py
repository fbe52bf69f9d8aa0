"""Subscriptions: ``/decision/v1/subscription[/{subscriber_id}]``."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from policy_pubsub.api import access, validation
from policy_pubsub.api.body import flag, read_model
from policy_pubsub.api.errors import json_response
from policy_pubsub.api.limits import limits
from policy_pubsub.api.state import app_state
from policy_pubsub.exceptions import NotFound, RouterUnavailable
from policy_pubsub.models import SubscriptionRequest
from policy_pubsub.service import PolicyService, Subscription
from policy_pubsub.timestamps import rfc3339


def _service(request: Request) -> PolicyService:
    return app_state(request).service


def _record(subscription: Subscription) -> dict[str, Any]:
    return {**subscription.record, "revision": subscription.revision}


async def subscribe(request: Request) -> Response:
    subscriber_id = validation.subscriber_id(request)
    body = await read_model(request, SubscriptionRequest)
    limits(request).check_filters(body.policy_filters, "policy-filters")
    # A component: the requested topic, and the topic of the one it would update, are its own.
    access.require_topic(request, body.subscriber_topic)
    result = await _service(request).subscribe(subscriber_id, body, access.topic_check(request))
    app_state(request).metrics.snapshots.labels("subscribe").inc()
    answer = _record(result.subscription)
    if body.return_policies:
        answer["policies"] = result.policies
    return json_response(answer, 201 if result.created else 200)


async def show(request: Request) -> Response:
    service = _service(request)
    subscriber_id = validation.subscriber_id(request)
    with_policies = flag(request, "policies")
    policies: dict[str, Any] | None = None
    if with_policies:
        subscription, policies = await service.subscription_with_policies(subscriber_id)
    else:
        subscription = await service.subscription(subscriber_id)
    if not access.may_read(request, subscription.topic):
        raise NotFound("subscription", subscriber_id)  # as if missing: its topic stays unsaid
    answer = _record(subscription)
    status: dict[str, Any] = {
        "last_revision": subscription.last_revision,
        "last_published_at": rfc3339(subscription.last_published_at),
        "last_consumed_at": None,
    }
    try:
        status["last_consumed_at"] = rfc3339(await service.last_consumed(subscription.topic))
    except RouterUnavailable:
        # The record and its policies come from the store: a component can re-read them
        # while the router is down; only what the router would tell is missing.
        status["last_consumed_unknown"] = "the message router cannot be reached"
    answer["status"] = status
    if policies is not None:
        # The snapshot of status.last_revision: a component's re-read, one request, exact.
        answer["policies"] = policies
    return json_response(answer)


async def unsubscribe(request: Request) -> Response:
    subscriber_id = validation.subscriber_id(request)
    await _service(request).unsubscribe(subscriber_id, access.topic_check(request))
    return Response(status_code=204)


async def listing(request: Request) -> Response:
    service = _service(request)
    topic = request.query_params.get("topic")
    if topic is not None:
        validation.topic(topic)
        access.require_topic(request, topic)
    stale = validation.seconds_param(request, "stale")
    # A component sees only the subscriptions on its topics; an admin sees all.
    found = [s for s in await service.subscriptions(topic) if access.may_read(request, s.topic)]
    if stale is not None:
        found = await service.stale(found, stale)
    return json_response({"subscriptions": [_record(s) for s in found]})


__all__ = ["listing", "show", "subscribe", "unsubscribe"]
