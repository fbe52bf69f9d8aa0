"""Every endpoint of the server, each declared once: ``ENDPOINTS`` and its ``TABLE``.

The app's routes, the access rules and the OpenAPI document are all made from this table
(``policy_pubsub.api.table``); a new endpoint is one more ``Endpoint`` here. The hot ones
(``front=True``: the decision API, subscribe and unsubscribe, the PAP pushes, the long-poll)
are answered in front of Starlette's router (``policy_pubsub.api.front``). The order is that
of the OpenAPI document's paths.
"""

from __future__ import annotations

from policy_pubsub.api import dead_letters, decision, events, health, openapi, pap, subscriptions
from policy_pubsub.api.errors import ErrorShape
from policy_pubsub.api.openapi import ref
from policy_pubsub.api.table import (
    JSON,
    Access,
    Endpoint,
    Openness,
    Operation,
    RouteTable,
    Schema,
)
from policy_pubsub.auth import COMPONENT, PAP

# -- who may call what (admin may call everything) --------------------------------------------

HEALTH = Access("health", frozenset(), open=Openness.ALWAYS)
OPENAPI = Access("openapi", frozenset(), open=Openness.ALWAYS)  # it describes the contract
METRICS = Access("metrics", frozenset(), open=Openness.IF_METRICS_PUBLIC)
PAP_WEBHOOK = Access("pap", frozenset({PAP}), signed=True)
# The endpoints check the subscription's topic against the component's patterns.
SUBSCRIPTIONS = Access("subscriptions", frozenset({COMPONENT}))
DECISION = Access("decision", frozenset({COMPONENT}))
# The topic is in the path, so the middleware checks it.
POLL = Access("poll", frozenset({COMPONENT}), topic="topic")
PUBLISH = Access("publish", frozenset())
TOPICS = Access("topics", frozenset())
DEAD_LETTERS = Access("dead-letters", frozenset())

# -- schemas of the operations that are not message files ---------------------------------------

PUBLISH_BODY: Schema = {
    "description": "One message (an object) or several (a non-empty array of objects).",
    "oneOf": [
        {"type": "object"},
        {"type": "array", "minItems": 1, "items": {"type": "object"}},
    ],
}
MESSAGES: Schema = {
    "description": "The messages read, oldest first, each one stored message as JSON text "
    "(on a subscriber topic, a SnapshotMessage); `[]` when none came within `timeout`.",
    "type": "array",
    "items": {"type": "string", "contentMediaType": JSON},
}

SUBSCRIPTION = "/decision/v1/subscription/{subscriber_id}"
POLICY = "/pap/v1/policies/{policy_id}"
POLL_PATH = "/events/{topic}/{consumer_group}/{consumer_id}"
_WRITE = (400, 413, 415, 503)
_MR = ErrorShape.DMAAP


def _decide(operation_id: str) -> Operation:
    return Operation(
        operation_id,
        "decision",
        "The deployed policies that a filter matches",
        {200: ("The matching policies, by policy-id.", ref("decision-response"))},
        (400, 413, 415),
        body=ref("decision-request"),
        query=("abbrev",),
        description="Ids that are not deployed are absent. The `action` is checked first: "
        "one other than `configure` (e.g. `guard`, whatever its `resource`) is 400 `No "
        "application for action <x>`.",
    )


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "POST",
        "/policy/pdpx/v1/decision",
        DECISION,
        _decide("decide"),
        decision.decide,
        front=True,
    ),
    Endpoint("POST", "/decision/v1", DECISION, _decide("decideAlias"), decision.decide, front=True),
    Endpoint(
        "GET",
        "/decision/v1/subscription",
        SUBSCRIPTIONS,
        Operation(
            "listSubscriptions",
            "subscriptions",
            "The subscriptions, by subscriber_id",
            {200: ("The subscription records.", ref("subscription-list"))},
            (400, 503),
            query=("topicQuery", "stale"),
        ),
        subscriptions.listing,
    ),
    Endpoint(
        "POST",
        SUBSCRIPTION,
        SUBSCRIPTIONS,
        Operation(
            "subscribe",
            "subscriptions",
            "Insert or update a subscription",
            {
                201: ("Inserted.", ref("subscription-record")),
                200: ("Updated.", ref("subscription-record")),
            },
            (*_WRITE, 409),
            body=ref("subscription-request"),
            description="Every insert and update publishes a snapshot (event `subscribe`) to "
            "the topic. The answer carries the current snapshot under `policies` when "
            "`return-policies` is true.",
        ),
        subscriptions.subscribe,
        front=True,
    ),
    Endpoint(
        "GET",
        SUBSCRIPTION,
        SUBSCRIPTIONS,
        Operation(
            "getSubscription",
            "subscriptions",
            "A subscription and its delivery status",
            {200: ("The record with `status`.", ref("subscription-record"))},
            (400, 404, 503),
            query=("policies",),
            missing="No such subscription, or none this user may see.",
        ),
        subscriptions.show,
    ),
    Endpoint(
        "DELETE",
        SUBSCRIPTION,
        SUBSCRIPTIONS,
        Operation(
            "unsubscribe",
            "subscriptions",
            "Delete a subscription; no further snapshots are published for it",
            {204: ("Deleted.", None)},
            (400, 404, 503),
            missing="No such subscription, or none this user may change.",
        ),
        subscriptions.unsubscribe,
        front=True,
    ),
    Endpoint(
        "POST",
        "/pap/v1/pdp-update",
        PAP_WEBHOOK,
        Operation(
            "pdpUpdate",
            "pap",
            "Apply an ONAP PDP_UPDATE of any PAP release, or take a PDP_STATE_CHANGE "
            "(PASSIVE or ACTIVE)",
            {200: ("The PDP_STATUS answer.", ref("pdp-status"))},
            _WRITE,
            body={"oneOf": [ref("pdp-update"), ref("pdp-state-change")]},
            description="`policies` (El Alto to Honolulu) is the complete desired set and "
            "wins; a delta beside it (Honolulu) must agree with it, else 400 and nothing "
            "changes; the delta alone (Istanbul on) is applied, undeployments first. Policies "
            "are named by their TOSCA `name` and `version`. An undeployment of a policy, or a "
            "version of it, that is not deployed changes nothing and answers `SUCCESS`, as "
            "ONAP's PDPs do, naming it in `responseMessage`; `policies` lists what is deployed.",
            error_bodies={
                413: (
                    "The body is larger than the server's limit (an Error), or a snapshot the "
                    "update causes would be larger than the message router's largest message: "
                    "a PDP_STATUS with `responseStatus` `FAIL` whose `responseMessage` names "
                    "the subscribers, the snapshot size and the limit. Nothing was changed.",
                    ref("pdp-status"),
                )
            },
        ),
        pap.pdp_update,
        front=True,
    ),
    Endpoint(
        "POST",
        "/pap/v1/policies",
        PAP_WEBHOOK,
        Operation(
            "deployPolicies",
            "pap",
            "Deploy policies (insert or replace), atomically",
            {200: ("What changed.", ref("policy-change-result"))},
            _WRITE,
            body=ref("policy-push"),
            description="A policy is identified by its TOSCA `name` and `version` (else "
            "`metadata.policy-id` / `policy-version`); a `name` and `metadata.policy-id` that "
            "differ are 400. Missing `metadata.policy-id` / `policy-version` are filled in from "
            "the name and version, as ONAP's policy-api fills them. Re-deploying a policy "
            "identical to the deployed one changes nothing and notifies nobody. A 2xx means "
            "the change and its snapshots are durably committed.",
        ),
        pap.deploy,
        front=True,
    ),
    Endpoint(
        "GET",
        "/pap/v1/policies",
        PAP_WEBHOOK,
        Operation(
            "listPolicies",
            "pap",
            "The deployed policies' identities",
            {200: ("Every deployed policy, by policy-id.", ref("policy-list"))},
        ),
        pap.listing,
    ),
    Endpoint(
        "GET",
        POLICY,
        PAP_WEBHOOK,
        Operation(
            "getPolicy",
            "pap",
            "One deployed policy, as deployed",
            {200: ("The policy.", ref("tosca-policy"))},
            (400, 404),
            missing="The policy is not deployed.",
        ),
        pap.show,
    ),
    Endpoint(
        "DELETE",
        POLICY,
        PAP_WEBHOOK,
        Operation(
            "undeployPolicy",
            "pap",
            "Undeploy a policy",
            {200: ("What changed.", ref("policy-change-result"))},
            (400, 404, 413, 503),
            missing="The policy is not deployed.",
        ),
        pap.undeploy,
        front=True,
    ),
    Endpoint(
        "POST",
        "/events/{topic}",
        PUBLISH,
        Operation(
            "publish",
            "message router",
            "Publish messages; the topic is created if it does not exist",
            {200: ("Stored.", ref("mr-publish-response"))},
            _WRITE,
            body=PUBLISH_BODY,
            body_types=(JSON, "application/cambria"),
        ),
        events.publish,
        shape=_MR,
    ),
    Endpoint(
        "GET",
        POLL_PATH,
        POLL,
        Operation(
            "poll",
            "message router",
            "Long-poll a topic for a consumer group",
            {200: ("The messages.", MESSAGES)},
            (400, 404, 429, 503),
            query=("timeout", "limit"),
            description="Answers as soon as a message is there, else after `timeout` ms. A new "
            "group starts at the oldest retained message. The group's position advances once "
            "a reply carrying messages has been written.",
            missing="No such topic.",
        ),
        asgi=events.Subscribe(),
        shape=_MR,
        front=True,
    ),
    Endpoint(
        "GET",
        "/topics",
        TOPICS,
        Operation(
            "listTopics",
            "message router",
            "The topics",
            {200: ("Every topic's name.", ref("topic-list"))},
            (503,),
        ),
        events.topics,
        shape=_MR,
    ),
    Endpoint(
        "GET",
        "/topics/{topic}",
        TOPICS,
        Operation(
            "getTopic",
            "message router",
            "A topic's messages and consumer groups",
            {200: ("The topic's details.", ref("topic-details"))},
            (400, 404, 503),
            description="Each consumer group with its position, lag and last read, and "
            "`consumers`, the consumers attached to it now where the router can tell "
            "(RabbitMQ: a subscriber's queue and its AMQP consumers), else null. On RabbitMQ "
            "the lag is the queue's ready messages: one delivered to a consumer and not yet "
            "acknowledged counts again once it is back in the queue.",
            missing="No such topic.",
        ),
        events.topic_details,
        shape=_MR,
    ),
    Endpoint(
        "GET",
        "/dead-letters",
        DEAD_LETTERS,
        Operation(
            "listDeadLetters",
            "operations",
            "The messages the message router refused for good",
            {200: ("The dead letters, oldest first.", ref("dead-letter-list"))},
            (503,),
            description="A message the router refuses for good leaves the outbox for the "
            "dead letters, so the messages behind it go on. The subscriber's next snapshot "
            "the router takes supersedes it (`superseded_by`); until then `/healthcheck` is "
            "503. Dead letters older than the retention window are removed.",
        ),
        dead_letters.listing,
    ),
    Endpoint(
        "POST",
        "/dead-letters/retry",
        DEAD_LETTERS,
        Operation(
            "retryDeadLetters",
            "operations",
            "Send a fresh snapshot to subscribers with dead letters",
            {200: ("What was sent.", ref("dead-letter-retry-result"))},
            (400, 413, 415, 503),
            body=ref("dead-letter-retry"),
            description="In one transaction, at a new store revision (so the subscriber's "
            "revisions keep increasing, and the router cannot take the snapshot for a copy "
            "of the refused one): a fresh snapshot of each subscriber's current policies "
            "goes through the outbox, and their dead letters are removed. 413 when a "
            "snapshot is still larger than the router's largest message: nothing changed.",
        ),
        dead_letters.retry,
    ),
    Endpoint(
        "GET",
        "/healthcheck",
        HEALTH,
        Operation(
            "healthcheck",
            "operations",
            "Are the store and the router reachable",
            {
                200: ("Healthy.", ref("healthcheck")),
                503: (
                    "The store or the router is unreachable, the outbox relay is stuck or "
                    "failing, or a subscriber has had nothing delivered since the router "
                    "refused its snapshot for good (a dead letter).",
                    ref("healthcheck"),
                ),
            },
            description="With a router that keeps a queue per subscription (RabbitMQ), "
            "`details.queues` adds figures over those queues (ready messages, consumers, "
            "queues without a consumer), read at most every 15 s; informative, the health "
            "does not depend on them.",
        ),
        health.healthcheck,
    ),
    Endpoint(
        "GET",
        "/metrics",
        METRICS,
        Operation(
            "metrics",
            "operations",
            "Metrics in the Prometheus text format",
            {
                200: (
                    "Every metric; each name starts with `policy_pubsub_`.",
                    {"type": "string"},
                )
            },
            ok_type="text/plain",
        ),
        health.metrics,
    ),
    Endpoint(
        "GET",
        "/openapi.json",
        OPENAPI,
        Operation(
            "openapi",
            "operations",
            "This document",
            {200: ("The OpenAPI 3.1 document.", {"type": "object"})},
        ),
        openapi.openapi,
    ),
)

TABLE = RouteTable(ENDPOINTS)

__all__ = [
    "DEAD_LETTERS",
    "DECISION",
    "ENDPOINTS",
    "HEALTH",
    "METRICS",
    "OPENAPI",
    "PAP_WEBHOOK",
    "POLICY",
    "POLL",
    "POLL_PATH",
    "PUBLISH",
    "SUBSCRIPTION",
    "SUBSCRIPTIONS",
    "TABLE",
    "TOPICS",
]
