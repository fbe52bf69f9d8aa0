"""A component that keeps its policies up to date by long-polling its policy-pubsub topic.

This is what a DCAE microservice (here the ONAP ``tca`` example) does, with plain httpx, for
components that cannot use the Python SDK (``examples/component.py`` does the same with it):

1. subscribe: ``POST /decision/v1/subscription/{subscriber_id}`` with its topic and policy
   filters; the answer holds the policies it starts with;
2. long-poll ``GET /events/{topic}/{group}/{consumer}?timeout=15000``; each message is a full
   snapshot of the policies matching its filters. Snapshots of other subscribers on a shared
   topic, and any whose revision is not above the last one applied, are ignored;
3. print what each new snapshot added, updated and removed;
4. when the server cannot be reached, retry with capped exponential backoff and, once it
   answers again, re-read the subscription with its policies
   (``GET /decision/v1/subscription/{subscriber_id}?policies=true``, labelled with the
   revision of the snapshot they are) before polling on, so that a snapshot lost with the
   connection cannot leave it stale, and a stale one polled later cannot take it back.

Run a server (``policy-pubsub serve``), then:

    python examples/httpx_component.py                   # the tca-1 defaults
    python examples/httpx_component.py --subscriber-id vfw-1 --topic policies_vfw_1 \\
        --policy-type onap.policies.monitoring.tcagen2
    python examples/pap_push.py                          # in another shell: see it change

It runs until Ctrl-C, or ``--max-changes N`` changes, or ``--exit-after SECONDS``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:6969"
POLL_TIMEOUT_MS = 15_000  # how long the server holds a poll open (DMaaP's usual 15 s)
READ_TIMEOUT = POLL_TIMEOUT_MS / 1000 + 15  # well above the hold time: a slow answer is no error
FIRST_BACKOFF = 0.5  # seconds; doubles after each consecutive failure, up to --max-backoff

Policies = dict[str, dict[str, Any]]


class Fatal(Exception):
    """An answer that retrying will not fix (e.g. a 400 for a bad filter)."""


class Unavailable(Exception):
    """The server could not be reached or answered 5xx: retry later."""


def say(line: str) -> None:
    print(line, flush=True)


def version(policy: dict[str, Any]) -> str:
    """The TOSCA version, as ONAP's PAP names it; metadata.policy-version only without one."""
    metadata = policy.get("metadata") or {}
    found = policy.get("version")
    if found is None:
        found = metadata.get("policy-version")
    return "?" if found is None else str(found)


@dataclass
class Component:
    """The component's view: the policies it holds and the revision they reflect."""

    http: httpx.Client
    subscriber_id: str
    topic: str
    group: str
    consumer: str
    onap: dict[str, str]
    filters: list[dict[str, Any]]
    policies: Policies = field(default_factory=dict)
    revision: int = -1  # of the last snapshot applied
    changes: int = 0

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request; its JSON answer, ``Unavailable`` to retry, or ``Fatal``."""
        try:
            answer = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unavailable(f"{type(exc).__name__}: {exc}") from None
        if answer.status_code >= 500 or answer.status_code == 404:
            # 404: the topic is not there (yet), e.g. a server restored from an old backup.
            raise Unavailable(f"{method} {path} answered {answer.status_code}")
        if not answer.is_success:
            raise Fatal(f"{method} {path} answered {answer.status_code}: {answer.text[:300]}")
        return answer.json()

    def subscribe(self) -> None:
        body = {
            "subscriber_topic": self.topic,
            "action": "configure",
            **self.onap,
            "policy-filters": self.filters,
            "return-policies": True,
        }
        answer = self.call("POST", f"/decision/v1/subscription/{self.subscriber_id}", json=body)
        self.revision = int(answer["revision"])
        self.policies = answer.get("policies") or {}
        say(
            f"subscribed {self.subscriber_id} on topic {self.topic} at revision "
            f"{self.revision}: {len(self.policies)} policies"
        )
        for policy_id in sorted(self.policies):
            say(f"  {policy_id} {version(self.policies[policy_id])}")

    def resync(self) -> None:
        """Re-read the subscription with its policies: the server labels them with the
        revision of the snapshot they are (``status.last_revision``), so a snapshot polled
        later is applied only if it is newer than what this re-read gave.
        """
        path = f"/decision/v1/subscription/{self.subscriber_id}"
        answer = self.call("GET", path, params={"policies": "true"})
        policies: Policies = answer.get("policies") or {}
        revision = int(answer["status"]["last_revision"])
        changed = self.apply("resync", policies)
        self.revision = max(self.revision, revision)
        if not changed:
            say(f"resync: {len(policies)} policies, no change")

    def poll(self, timeout_ms: int) -> None:
        path = f"/events/{self.topic}/{self.group}/{self.consumer}"
        messages = self.call("GET", path, params={"timeout": timeout_ms})
        for text in messages:
            try:
                snapshot = json.loads(text)
            except ValueError:
                continue  # not a snapshot: someone else's message on a shared topic
            if not isinstance(snapshot, dict):
                continue
            if snapshot.get("subscriber_id") != self.subscriber_id:
                continue  # another component's snapshot on a shared topic
            revision = snapshot.get("revision")
            if not isinstance(revision, int) or revision <= self.revision:
                continue  # a duplicate, or older than what we hold
            self.revision = revision
            self.apply(f"revision {revision}", snapshot.get("policies") or {})

    def apply(self, label: str, new: Policies) -> bool:
        """Take ``new`` as the policies held; print the delta; True if anything changed."""
        old = self.policies
        lines = [f"{label}: added {pid} {version(new[pid])}" for pid in sorted(new.keys() - old)]
        lines += [
            f"{label}: updated {pid} {version(old[pid])} -> {version(new[pid])}"
            for pid in sorted(new.keys() & old.keys())
            if new[pid] != old[pid]
        ]
        lines += [f"{label}: removed {pid}" for pid in sorted(old.keys() - new)]
        self.policies = new
        for line in lines:
            say(line)
        if lines:
            self.changes += 1
        return bool(lines)


def run(
    component: Component, max_changes: int | None, exit_after: float | None, max_backoff: float
) -> int:
    started = time.monotonic()
    subscribed = False
    resync_needed = False
    failures = 0

    def remaining() -> float:
        return float("inf") if exit_after is None else started + exit_after - time.monotonic()

    while remaining() > 0:
        if max_changes is not None and component.changes >= max_changes:
            say(f"stopping: {component.changes} changes applied (--max-changes)")
            return 0
        step = "subscribe" if not subscribed else "resync" if resync_needed else "poll"
        try:
            if step == "subscribe":
                component.subscribe()
                subscribed = True
            elif step == "resync":
                component.resync()
                resync_needed = False
            else:
                component.poll(int(min(POLL_TIMEOUT_MS, remaining() * 1000)))
            failures = 0
        except Unavailable as exc:
            delay = min(max_backoff, FIRST_BACKOFF * 2**failures) * random.uniform(0.5, 1.0)
            failures += 1
            resync_needed = subscribed
            say(f"{step} failed ({exc}); retrying in {delay:.2f} s")
            time.sleep(max(0.0, min(delay, remaining())))
    say(f"exiting after {exit_after:g} s")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="A component that subscribes to its policies on a policy-pubsub server "
        "and prints every change it receives by long-polling its topic.",
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
    parser.add_argument("--consumer", default="1", help="consumer id in the group (default 1)")
    parser.add_argument(
        "--max-changes",
        type=int,
        metavar="N",
        help="exit 0 once N snapshots (or re-reads) changed its policies",
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
    filters: list[dict[str, Any]] = []
    if args.policy_id:
        filters.append({"policy-id": args.policy_id})
    if args.policy_type:
        filters.append({"policy-type": args.policy_type})
    if not filters:
        filters = [{"policy-id": ["onap.scaleout.tca", "onap.restart.tca"]}]
    onap = {
        "ONAPName": args.onap_name,
        "ONAPComponent": args.onap_component,
        "ONAPInstance": args.onap_instance,
    }
    timeout = httpx.Timeout(10.0, read=READ_TIMEOUT)
    with httpx.Client(base_url=args.url, timeout=timeout) as http:
        component = Component(
            http,
            args.subscriber_id,
            args.topic,
            args.group or args.subscriber_id,
            args.consumer,
            onap,
            filters,
        )
        try:
            return run(component, args.max_changes, args.exit_after, args.max_backoff)
        except Fatal as exc:
            print(f"component: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130


if __name__ == "__main__":
    sys.exit(main())
