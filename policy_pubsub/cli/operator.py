"""The operator's commands beside ``push``: policies, decisions, subscriptions and topics.

``delete``, ``policies``, ``decide``, ``subscribe``, ``unsubscribe``, ``subscribers`` and
``tail``; each is one function over the HTTP API of API.md.
"""

from __future__ import annotations

import argparse
import json
import uuid
from typing import Any

from policy_pubsub import constants
from policy_pubsub.cli.common import (
    Api,
    CommandError,
    Commands,
    add_command,
    parse_filters,
    plural,
    positive_int,
    print_json,
    segment,
    table,
)
from policy_pubsub.policy_identity import version_label
from policy_pubsub.subscription_record import SubscriptionRecord

POLICIES = "/pap/v1/policies"
DECISION = "/decision/v1"
SUBSCRIPTIONS = "/decision/v1/subscription"
FILTER_HELP = (
    'a policy filter, e.g. \'{"policy-id": ["onap.restart.tca"]}\' or '
    '\'{"policy-type": "onap.policies.monitoring.*"}\'; repeat for several (their union)'
)


def register(commands: Commands) -> None:
    delete = add_command(
        commands,
        "delete",
        summary="undeploy a policy",
        description="Undeploy a policy; every subscriber whose snapshot held it is notified.",
        example="""\
example:
  policy-pubsub delete onap.restart.tca
      undeployed onap.restart.tca 1.0.0
      revision 5; 1 subscriber notified""",
        run=delete_command,
    )
    delete.add_argument("policy_id", metavar="POLICY_ID")

    policies = add_command(
        commands,
        "policies",
        summary="list the deployed policies, or show one",
        description="List the deployed policies (id, version, type), or print one policy.",
        example="""\
examples:
  policy-pubsub policies
      POLICY-ID          VERSION  TYPE
      onap.restart.tca   1.0.0    onap.policies.monitoring.tcagen2
  policy-pubsub policies onap.restart.tca       the whole ToscaPolicy, as JSON""",
        run=policies_command,
    )
    policies.add_argument("policy_id", metavar="POLICY_ID", nargs="?", help="show this policy")

    decide = add_command(
        commands,
        "decide",
        summary="ask the decision API which policies match filters",
        description="Ask the decision API for the deployed policies that match any of the "
        "filters, as a component would.",
        example="""\
examples:
  policy-pubsub decide --filter '{"policy-type": "onap.policies.monitoring.*"}'
      POLICY-ID          VERSION  TYPE
      onap.restart.tca   1.0.0    onap.policies.monitoring.tcagen2
  policy-pubsub decide --filter '{"policy-id": "onap.restart.tca"}' \\
      --filter '{"policy-id": "guard.minmax.vdns"}' --abbrev --json""",
        run=decide_command,
    )
    decide.add_argument(
        "--filter",
        dest="filters",
        action="append",
        required=True,
        metavar="JSON",
        help=FILTER_HELP,
    )
    decide.add_argument(
        "--abbrev", action="store_true", help="only each policy's type and metadata (for --json)"
    )

    subscribe = add_command(
        commands,
        "subscribe",
        summary="add or update a subscription",
        description="Subscribe (or update the subscription of) a component: the server "
        "publishes a snapshot of its matching policies to TOPIC now and on every change.",
        example="""\
example:
  policy-pubsub subscribe tca-1 --topic policies_DCAE_tca_tca-1 \\
      --filter '{"policy-id": ["onap.scaleout.tca", "onap.restart.tca"]}' \\
      --onap-name DCAE --onap-component tca --onap-instance tca-1
      created subscription tca-1 on topic policies_DCAE_tca_tca-1 at revision 2
      policies now: onap.restart.tca 1.0.0""",
        run=subscribe_command,
    )
    subscribe.add_argument("subscriber_id", metavar="SUBSCRIBER_ID")
    subscribe.add_argument("--topic", required=True, help="the topic its snapshots go to")
    subscribe.add_argument(
        "--filter",
        dest="filters",
        action="append",
        required=True,
        metavar="JSON",
        help=FILTER_HELP,
    )
    subscribe.add_argument("--onap-name", metavar="NAME", help="ONAPName, e.g. DCAE")
    subscribe.add_argument("--onap-component", metavar="NAME", help="ONAPComponent, e.g. tca")
    subscribe.add_argument("--onap-instance", metavar="NAME", help="ONAPInstance, e.g. tca-1")

    unsubscribe = add_command(
        commands,
        "unsubscribe",
        summary="remove a subscription",
        description="Remove a subscription: no further snapshots are published for it. "
        'With --json it prints {"subscriber_id": ..., "unsubscribed": true}.',
        example="""\
example:
  policy-pubsub unsubscribe tca-1
      unsubscribed tca-1""",
        run=unsubscribe_command,
    )
    unsubscribe.add_argument("subscriber_id", metavar="SUBSCRIBER_ID")

    subscribers = add_command(
        commands,
        "subscribers",
        summary="list subscriptions",
        description="List the subscriptions: id, topic, filters, and the revision of the last "
        "snapshot published to each.",
        example="""\
examples:
  policy-pubsub subscribers
      SUBSCRIBER-ID  TOPIC                    FILTERS                           LAST-REVISION
      tca-1          policies_DCAE_tca_tca-1  {"policy-id":"onap.restart.tca"}  4
  policy-pubsub subscribers --stale 600     whose topic nobody read for 10 minutes
                                            while messages wait""",
        run=subscribers_command,
    )
    subscribers.add_argument("--topic", help="only the subscriptions of this topic")
    subscribers.add_argument(
        "--stale",
        type=seconds,
        metavar="SECONDS",
        help="only those whose topic nobody has read for SECONDS while messages wait",
    )

    tail = add_command(
        commands,
        "tail",
        summary="print the messages of a topic as they arrive",
        description="Long-poll a topic and print each message as it arrives: pretty JSON, "
        "or one message per line with --json. A new consumer group starts at the oldest "
        "retained message, so by default (a new group each run) it prints what the topic "
        "keeps, then waits for more. Ctrl-C stops it.",
        example="""\
examples:
  policy-pubsub tail policies_DCAE_tca_tca-1
  policy-pubsub tail policies_DCAE_tca_tca-1 --json --max-messages 1 | jq .revision
  policy-pubsub tail policies_DCAE_tca_tca-1 --group ops --consumer c1
      only what group "ops" has not read yet (and marks it read)""",
        run=tail_command,
    )
    tail.add_argument("topic", metavar="TOPIC")
    tail.add_argument("--group", help="consumer group (default: a new one for each run)")
    tail.add_argument("--consumer", default="tail", help="consumer id (default tail)")
    tail.add_argument(
        "--max-messages", type=positive_int, metavar="N", help="stop after N messages"
    )
    tail.add_argument(
        "--timeout-ms",
        type=positive_int,
        default=constants.DEFAULT_POLL_TIMEOUT_MS,
        metavar="MS",
        help="how long each poll waits for a message "
        f"(default {constants.DEFAULT_POLL_TIMEOUT_MS})",
    )


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < 10**9:
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, not {text}")
    return value


def delete_command(args: argparse.Namespace) -> int:
    with Api.from_args(args) as api:
        answer = api.request("DELETE", f"{POLICIES}/{segment(args.policy_id)}").body
    if args.json:
        print_json(answer)
        return 0
    for ident in answer.get("undeployed", []):
        print(f"undeployed {ident.get('policy-id')} {ident.get('policy-version')}")
    notified = plural(int(answer.get("notified", 0)), "subscriber")
    print(f"revision {answer.get('revision')}; {notified} notified")
    return 0


def policies_command(args: argparse.Namespace) -> int:
    with Api.from_args(args) as api:
        if args.policy_id is not None:
            print_json(api.get(f"{POLICIES}/{segment(args.policy_id)}"))
            return 0
        answer = api.get(POLICIES)
    if args.json:
        print_json(answer)
        return 0
    rows = sorted(
        (p.get("policy-id"), p.get("policy-version"), p.get("policy-type"))
        for p in answer.get("policies", [])
    )
    print(table(["policy-id", "version", "type"], rows) if rows else "no policy is deployed")
    return 0


def decide_command(args: argparse.Namespace) -> int:
    body = {"action": constants.ACTION_CONFIGURE, "policy-filters": parse_filters(args.filters)}
    params = {"abbrev": "true"} if args.abbrev else None
    with Api.from_args(args) as api:
        answer = api.post(DECISION, body, params=params)
    if args.json:
        print_json(answer)
        return 0
    found: dict[str, Any] = answer.get("policies", {})
    rows = sorted((pid, version_label(p), p.get("type")) for pid, p in found.items())
    print(table(["policy-id", "version", "type"], rows) if rows else "no deployed policy matches")
    return 0


def subscribe_command(args: argparse.Namespace) -> int:
    body = SubscriptionRecord.make(
        args.subscriber_id,
        args.topic,
        parse_filters(args.filters),
        onap_name=args.onap_name,
        onap_component=args.onap_component,
        onap_instance=args.onap_instance,
    ).subscribe_body()
    with Api.from_args(args) as api:
        answer = api.request("POST", f"{SUBSCRIPTIONS}/{segment(args.subscriber_id)}", body=body)
    record = answer.body
    if args.json:
        print_json(record)
        return 0
    verb = "created" if answer.status == 201 else "updated"
    print(
        f"{verb} subscription {record.get('subscriber_id')} on topic "
        f"{record.get('subscriber_topic')} at revision {record.get('revision')}"
    )
    found: dict[str, Any] = record.get("policies", {})
    listed = ", ".join(f"{pid} {version_label(p)}" for pid, p in sorted(found.items()))
    print(f"policies now: {listed}" if listed else "no deployed policy matches yet")
    return 0


def unsubscribe_command(args: argparse.Namespace) -> int:
    with Api.from_args(args) as api:
        api.request("DELETE", f"{SUBSCRIPTIONS}/{segment(args.subscriber_id)}")
    if args.json:
        print_json({"subscriber_id": args.subscriber_id, "unsubscribed": True})
    else:
        print(f"unsubscribed {args.subscriber_id}")
    return 0


def subscribers_command(args: argparse.Namespace) -> int:
    params: dict[str, str | float] = {}
    if args.topic is not None:
        params["topic"] = args.topic
    if args.stale is not None:
        params["stale"] = args.stale
    with Api.from_args(args) as api:
        answer = api.get(SUBSCRIPTIONS, params=params)
        if args.json:
            print_json(answer)
            return 0
        rows = []
        for record in answer.get("subscriptions", []):
            rows.append(
                (
                    record.get("subscriber_id"),
                    record.get("subscriber_topic"),
                    " ".join(_compact(f) for f in record.get("policy-filters", [])),
                    _last_revision(api, record),
                )
            )
    rows.sort(key=lambda row: str(row[0]))
    print(
        table(["subscriber-id", "topic", "filters", "last-revision"], rows)
        if rows
        else "no subscription" + (" matches" if params else "")
    )
    return 0


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _last_revision(api: Api, record: dict[str, Any]) -> str:
    """The revision of the last snapshot published to a subscriber (only its own record says)."""
    subscriber_id = str(record.get("subscriber_id"))
    try:
        detail = api.get(f"{SUBSCRIPTIONS}/{segment(subscriber_id)}")
    except CommandError:
        return "-"  # removed since the listing, or not readable: the table still helps
    revision = (detail.get("status") or {}).get("last_revision")
    return "-" if revision is None else str(revision)


def tail_command(args: argparse.Namespace) -> int:
    group = args.group or f"policy-pubsub-tail-{uuid.uuid4().hex[:12]}"
    path = f"/events/{segment(args.topic)}/{segment(group)}/{segment(args.consumer)}"
    # The read timeout covers the server's hold time plus --timeout for the answer itself.
    wait = args.timeout_ms / 1000 + args.timeout
    printed = 0
    try:
        with Api.from_args(args) as api:
            while args.max_messages is None or printed < args.max_messages:
                limit = constants.DEFAULT_POLL_LIMIT
                if args.max_messages is not None:
                    # Ask for no more than will be printed: the group consumes what it is sent.
                    limit = min(limit, args.max_messages - printed)
                messages = api.get(
                    path, params={"timeout": args.timeout_ms, "limit": limit}, timeout=wait
                )
                if not isinstance(messages, list):
                    raise CommandError(f"{api.url}{path} did not answer a list of messages")
                for message in messages:
                    print_message(message, one_line=args.json)
                printed += len(messages)
    except KeyboardInterrupt:
        return 0
    return 0


def print_message(message: Any, *, one_line: bool) -> None:
    """A message as the router gave it: pretty JSON, or one JSON document per line."""
    if not isinstance(message, str):
        print_json(message, compact=one_line)
        return
    try:
        value = json.loads(message)
    except ValueError:
        print_json(message, compact=True) if one_line else print(message, flush=True)
        return
    if one_line and "\n" not in message:
        print(message, flush=True)  # the raw text, byte for byte
    else:
        print_json(value, compact=one_line)
