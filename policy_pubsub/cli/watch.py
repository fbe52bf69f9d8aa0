"""``policy-pubsub watch SUBSCRIBER_ID``: follow a subscription's changes as a component would.

It subscribes (with ``--filter``) or attaches to the existing subscription (reading its
record), then prints each change the component SDK reports: added, updated and removed
policies, with the revision and the time it arrived.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from policy_pubsub import constants
from policy_pubsub.cli.common import (
    CommandError,
    Commands,
    UsageError,
    add_command,
    credentials,
    httpx_auth,
    parse_filters,
    plural,
    positive_float,
    positive_int,
    print_json,
    server_url,
)
from policy_pubsub.client import PolicyChange, PolicySubscriber, Timings
from policy_pubsub.client.http import HttpClient, TransientError, without_credentials
from policy_pubsub.client.wire import Wire
from policy_pubsub.exceptions import (
    ClientError,
    RequestRejected,
    ServerUnreachable,
    SubscriptionRejected,
)
from policy_pubsub.policy_identity import UNKNOWN_VERSION, version_label
from policy_pubsub.subscription_record import SubscriptionRecord

DEFAULT_GIVE_UP_AFTER = 60.0
WATCH_GROUP_SUFFIX = ".watch"

WATCH_EXAMPLE = """\
examples:
  policy-pubsub watch tca-1
    2026-11-22T10:00:00.000Z attached to tca-1 on topic policies_tca-1 at revision 7: 1 policy
      onap.restart.tca 1.0.0
    2026-11-22T10:02:13.513Z revision 9: updated onap.restart.tca 1.0.0 -> 1.0.1
    2026-11-22T10:05:40.002Z revision 12: added onap.scaleout.tca 1.0.0
  policy-pubsub watch vfw-1 --topic policies_vfw_1 \\
      --filter '{"policy-type": "onap.policies.monitoring.*"}'
    creates (or updates) the subscription vfw-1, then watches it
  policy-pubsub watch tca-1 --json --max-changes 1
    one JSON line for the starting policies, then one per change; exits after one change

It attaches to an existing subscription by reading its record (GET
/decision/v1/subscription/SUBSCRIBER_ID); --filter (required when the subscription does not
exist yet) and --topic replace what the record says. Either way it subscribes again (insert or
update), which publishes one snapshot to the topic. It reads the topic as its own consumer group
(SUBSCRIBER_ID.watch unless --group), so the component's own reads are not disturbed. When the
server goes away it retries, for --give-up-after seconds at most."""


def register(commands: Commands) -> None:
    watch = add_command(
        commands,
        "watch",
        summary="subscribe (or attach) and print each change as it arrives",
        description="Subscribe, or attach to an existing subscription, and print every "
        "change of its policies (added, updated, removed) with its revision and time, as the "
        "component SDK computes it. Runs until Ctrl-C or --max-changes.",
        example=WATCH_EXAMPLE,
        run=watch_command,
    )
    watch.add_argument("subscriber_id", metavar="SUBSCRIBER_ID")
    watch.add_argument("--topic", help="the subscriber topic (default: the record's, else the id)")
    watch.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="JSON",
        help='a policy filter, e.g. \'{"policy-id": ["onap.restart.tca"]}\'; repeat for several '
        "(their union); required when the subscription does not exist yet",
    )
    watch.add_argument(
        "--max-changes",
        type=positive_int,
        metavar="N",
        help="exit 0 after N changes (the starting policies are not one)",
    )
    watch.add_argument(
        "--group", help=f"the consumer group to read as (default SUBSCRIBER_ID{WATCH_GROUP_SUFFIX})"
    )
    watch.add_argument(
        "--give-up-after",
        type=positive_float,
        default=DEFAULT_GIVE_UP_AFTER,
        metavar="SECONDS",
        help="exit 1 once the server has failed for this long in a row "
        f"(default {DEFAULT_GIVE_UP_AFTER:g})",
    )
    watch.add_argument("--verbose", action="store_true", help="log retries and re-reads on stderr")


def watch_command(args: argparse.Namespace) -> int:
    url = server_url(args)
    filters = parse_filters(args.filter)
    if not re.fullmatch(constants.SUBSCRIBER_ID_PATTERN, args.subscriber_id):
        raise UsageError(f"SUBSCRIBER_ID {args.subscriber_id!r} must be 1-255 of [A-Za-z0-9._:-]")
    if args.topic is not None and not re.fullmatch(constants.TOPIC_PATTERN, args.topic):
        raise UsageError(f"--topic {args.topic!r} must be 1-255 of [A-Za-z0-9._-]")
    if args.verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        client_log = logging.getLogger("policy_pubsub.client")
        client_log.addHandler(handler)
        client_log.setLevel(logging.INFO)
    try:
        return asyncio.run(_watch(args, url, filters))
    except KeyboardInterrupt:
        return 130


async def _watch(args: argparse.Namespace, url: str, filters: list[dict[str, Any]]) -> int:
    subscriber_id: str = args.subscriber_id
    found = credentials(args)
    async with httpx.AsyncClient(timeout=args.timeout, auth=httpx_auth(found)) as http:
        record = await _record(http, url, subscriber_id, args.timeout)
        if record is None and not filters:
            raise CommandError(
                f"there is no subscription {subscriber_id!r}: give --filter (and --topic) "
                "to create it"
            )
        topic = args.topic or (record.subscriber_topic if record else None)
        try:
            subscriber = PolicySubscriber(
                url,
                subscriber_id=subscriber_id,
                subscriber_topic=topic or _default_topic(subscriber_id),
                policy_filters=filters or (list(record.policy_filters) if record else []),
                onap_name=record.onap_name if record else None,
                onap_component=record.onap_component if record else None,
                onap_instance=record.onap_instance if record else None,
                consumer_group=args.group or f"{subscriber_id}{WATCH_GROUP_SUFFIX}",
                consumer_id="watch",
                timings=Timings(request_timeout=args.timeout, give_up_after=args.give_up_after),
                auth=found if isinstance(found, tuple) else None,
                token=found if isinstance(found, str) else None,
                http=http,
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        try:
            async with subscriber:
                _print_start(args, subscriber, attached=record is not None)
                seen = 0
                async for change in subscriber.changes():
                    _print_change(args, subscriber_id, change)
                    seen += 1
                    if args.max_changes is not None and seen >= args.max_changes:
                        break
        except SubscriptionRejected as exc:
            raise CommandError(f"the server refused the subscription: {exc.error}") from None
        except ServerUnreachable as exc:
            raise CommandError(
                f"cannot reach {without_credentials(url)}: gave up after {exc.attempts} "
                f"attempts ({exc.reason})"
            ) from None
        except ClientError as exc:
            raise CommandError(exc.message) from None
    return 0


async def _record(
    http: httpx.AsyncClient, url: str, subscriber_id: str, timeout: float
) -> SubscriptionRecord | None:
    """The subscription's record, None if there is none; one attempt."""
    try:
        answer = await Wire(HttpClient(http, url, timeout=timeout)).subscription(subscriber_id)
    except TransientError as exc:
        raise CommandError(f"cannot reach {without_credentials(url)}: {exc.reason}") from None
    except RequestRejected as exc:
        raise CommandError(f"{exc.status}: {exc.error}") from None
    if answer is None:
        return None
    try:
        return SubscriptionRecord.from_wire(answer)
    except ValueError as exc:
        raise CommandError(f"{without_credentials(url)}: {exc}") from None


def _default_topic(subscriber_id: str) -> str:
    """The subscriber id, with the ``:`` a topic cannot hold replaced."""
    return subscriber_id.replace(":", "_")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _print_start(args: argparse.Namespace, subscriber: PolicySubscriber, *, attached: bool) -> None:
    policies = subscriber.policies
    if args.json:
        print_json(
            {
                "time": _now(),
                "subscriber_id": subscriber.subscriber_id,
                "revision": subscriber.revision,
                "event": constants.EVENT_SUBSCRIBE,
                "added": policies,
                "updated": {},
                "removed": [],
            },
            compact=True,
        )
        return
    verb = "attached to" if attached else "subscribed"
    print(
        f"{_now()} {verb} {subscriber.subscriber_id} on topic {subscriber.subscriber_topic} "
        f"at revision {subscriber.revision}: {plural(len(policies), 'policy', 'policies')}"
    )
    for policy_id in sorted(policies):
        print(f"  {policy_id} {version_label(policies[policy_id])}")
    sys.stdout.flush()


def _print_change(args: argparse.Namespace, subscriber_id: str, change: PolicyChange) -> None:
    if args.json:
        print_json(
            {
                "time": _now(),
                "subscriber_id": subscriber_id,
                "revision": change.revision,
                "event": change.event,
                "added": change.added,
                "updated": change.updated,
                "removed": sorted(change.removed),
            },
            compact=True,
        )
        return
    stamp = _now()
    label = f"revision {change.revision}"
    if change.event != constants.EVENT_UPDATE:
        label += f" ({change.event})"
    old: Mapping[str, Any] = change.previous
    for policy_id in sorted(change.added):
        print(f"{stamp} {label}: added {policy_id} {version_label(change.added[policy_id])}")
    for policy_id in sorted(change.updated):
        before = version_label(old[policy_id]) if policy_id in old else UNKNOWN_VERSION
        after = version_label(change.updated[policy_id])
        print(f"{stamp} {label}: updated {policy_id} {before} -> {after}")
    for policy_id in sorted(change.removed):
        before = version_label(old[policy_id]) if policy_id in old else UNKNOWN_VERSION
        print(f"{stamp} {label}: removed {policy_id} {before}")
    sys.stdout.flush()
