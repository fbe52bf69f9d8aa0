"""A component that keeps its policies up to date with the policy-pubsub SDK.

This is what a DCAE microservice (here the ONAP ``tca`` example) does with
``policy_pubsub.client.PolicySubscriber``:

1. ``async with PolicySubscriber(...)`` subscribes; ``subscriber.policies`` is what it starts
   with (with ``--state-file``, what it had applied before it stopped);
2. ``async for change in subscriber.changes()`` gives each change as it arrives: the policies
   added, updated and removed, computed against what the component holds. Asking for the next
   change marks the previous one applied (and records it in the state file);
3. the SDK drops other subscribers' snapshots on a shared topic, duplicates and stale ones,
   retries an unreachable server with jittered backoff and re-reads the policies before
   polling on, so a server restart or a reply lost on the wire cannot leave it stale.

``examples/httpx_component.py`` does the same with plain httpx, for comparison. A program that
is not asyncio would call ``PolicySubscriber(...).run(handler)`` instead, which blocks and calls
``handler(change)`` for each change.

Run a server (``policy-pubsub serve``), then:

    python examples/component.py                         # the tca-1 defaults
    python examples/component.py --state-file /tmp/tca-1.json   # restarts report a true delta
    python examples/pap_push.py                          # in another shell: see it change

It runs until Ctrl-C, or ``--max-changes N`` changes, or ``--exit-after SECONDS``. Retries
are logged on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Mapping
from typing import Any

from policy_pubsub.client import PolicyChange, PolicySubscriber, Timings, version_label
from policy_pubsub.exceptions import ClientError

DEFAULT_URL = "http://127.0.0.1:6969"


def say(line: str) -> None:
    print(line, flush=True)


def show(change: PolicyChange) -> None:
    """Print what a change added, updated and removed, one line each."""
    label = f"revision {change.revision}"
    old: Mapping[str, Any] = change.previous
    for policy_id in sorted(change.added):
        say(f"{label}: added {policy_id} {version_label(change.added[policy_id])}")
    for policy_id in sorted(change.updated):
        before, after = version_label(old[policy_id]), version_label(change.updated[policy_id])
        say(f"{label}: updated {policy_id} {before} -> {after}")
    for policy_id in sorted(change.removed):
        say(f"{label}: removed {policy_id}")


async def run(
    subscriber: PolicySubscriber, max_changes: int | None, exit_after: float | None
) -> int:
    async with subscriber:
        policies = subscriber.policies
        say(
            f"subscribed {subscriber.subscriber_id} on topic {subscriber.subscriber_topic} "
            f"at revision {subscriber.revision}: {len(policies)} policies"
        )
        for policy_id in sorted(policies):
            say(f"  {policy_id} {version_label(policies[policy_id])}")
        if exit_after is not None:
            # stop() ends changes() at once, even in the middle of a long-poll.
            asyncio.get_running_loop().call_later(exit_after, subscriber.stop)
        applied = 0
        async for change in subscriber.changes():
            show(change)  # a real component would reconfigure itself here
            applied += 1
            if max_changes is not None and applied >= max_changes:
                await subscriber.ack()  # leaving the loop does not apply the last change
                say(f"stopping: {applied} changes applied (--max-changes)")
                return 0
    say(f"exiting after {exit_after:g} s")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="A component that subscribes to its policies on a policy-pubsub server "
        "with the policy_pubsub.client SDK and prints every change it receives.",
        epilog="Without --policy-id or --policy-type it asks for onap.scaleout.tca and "
        "onap.restart.tca, as the ONAP tca example does.",
    )
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the server (default {DEFAULT_URL})")
    parser.add_argument(
        "--subscriber-id", default="tca-1", metavar="ID", help="who subscribes (default tca-1)"
    )
    parser.add_argument(
        "--topic",
        default="policies_DCAE_tca_tca-1",
        help="the topic its snapshots go to (default policies_DCAE_tca_tca-1)",
    )
    parser.add_argument(
        "--policy-id",
        action="append",
        default=[],
        metavar="ID",
        help="a policy id to receive (repeatable; a trailing * matches by prefix)",
    )
    parser.add_argument(
        "--policy-type",
        action="append",
        default=[],
        metavar="TYPE",
        help="a policy type to receive (repeatable; a trailing * matches by prefix)",
    )
    parser.add_argument("--onap-name", default="DCAE", metavar="NAME", help="default DCAE")
    parser.add_argument("--onap-component", default="tca", metavar="NAME", help="default tca")
    parser.add_argument("--onap-instance", default="tca-1", metavar="NAME", help="default tca-1")
    parser.add_argument("--group", help="consumer group (default: the subscriber id)")
    parser.add_argument("--consumer", help="consumer id in the group (default: the subscriber id)")
    parser.add_argument(
        "--state-file",
        metavar="PATH",
        help="keep the applied policies here, so that a restart reports a true delta",
    )
    parser.add_argument(
        "--max-changes", type=int, metavar="N", help="exit 0 once N changes were applied"
    )
    parser.add_argument(
        "--exit-after", type=float, metavar="SECONDS", help="exit 0 after this long"
    )
    parser.add_argument(
        "--max-backoff",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="longest wait between retries when the server is unreachable (default 30)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    filters: list[dict[str, Any]] = []
    if args.policy_id:
        filters.append({"policy-id": args.policy_id})
    if args.policy_type:
        filters.append({"policy-type": args.policy_type})
    if not filters:
        filters = [{"policy-id": ["onap.scaleout.tca", "onap.restart.tca"]}]
    try:
        subscriber = make_subscriber(args, filters)
    except ValueError as exc:
        print(f"component: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(run(subscriber, args.max_changes, args.exit_after))
    except ClientError as exc:
        print(f"component: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def make_subscriber(args: argparse.Namespace, filters: list[dict[str, Any]]) -> PolicySubscriber:
    return PolicySubscriber(
        args.url,
        subscriber_id=args.subscriber_id,
        subscriber_topic=args.topic,
        policy_filters=filters,
        onap_name=args.onap_name,
        onap_component=args.onap_component,
        onap_instance=args.onap_instance,
        consumer_group=args.group,
        consumer_id=args.consumer,
        state_file=args.state_file,
        timings=Timings(backoff_initial=min(0.5, args.max_backoff), backoff_max=args.max_backoff),
    )


if __name__ == "__main__":
    sys.exit(main())
