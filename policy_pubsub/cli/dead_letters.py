"""``policy-pubsub dead-letters``: the messages the router refused for good, and a fresh
snapshot for their subscribers (``--retry``), over ``GET /dead-letters`` and
``POST /dead-letters/retry``.
"""

from __future__ import annotations

import argparse
from typing import Any

from policy_pubsub.cli.common import (
    Api,
    Commands,
    UsageError,
    add_command,
    plural,
    print_json,
    table,
)

DEAD_LETTERS = "/dead-letters"
RETRY = "/dead-letters/retry"


def register(commands: Commands) -> None:
    parser = add_command(
        commands,
        "dead-letters",
        summary="list the messages the router refused for good, or send their subscribers "
        "a fresh snapshot",
        description="List the dead letters: snapshots the message router refused for good "
        "(a DMaaP 4xx such as 413, a NATS message over max_payload). Each left the outbox "
        "so that the others went on. WAITING means the subscriber has had nothing delivered "
        "since (and /healthcheck is 503); otherwise the revision of its next snapshot the "
        "router took, which carries everything the dead letter did. --retry sends each "
        "subscriber (all of them, or the SUBSCRIBER_IDs) a fresh snapshot of its current "
        "policies at a new revision, through the outbox, and removes their dead letters; "
        "first fix what the router refused (e.g. raise the MR's message size limit). Dead "
        "letters older than the retention window are removed on their own.",
        example="""\
examples:
  policy-pubsub dead-letters
      ID  SUBSCRIBER-ID  TOPIC  REVISION  BYTES    REFUSED-AT                DELIVERED-SINCE  ...
      1   tca-1          tca-1  7         1572941  2026-12-03T06:00:00.000Z  WAITING          ...
      (and REASON: the router's words, e.g. "message router answered 413: ...")
  policy-pubsub dead-letters --json
  policy-pubsub dead-letters --retry           every subscriber with a dead letter
      revision 12: fresh snapshot for 1 subscriber (tca-1); 1 dead letter removed
  policy-pubsub dead-letters --retry tca-1     only tca-1""",
        run=dead_letters_command,
    )
    parser.add_argument(
        "subscriber_ids",
        metavar="SUBSCRIBER_ID",
        nargs="*",
        help="with --retry: only these subscribers (default: every one with a dead letter)",
    )
    parser.add_argument(
        "--retry",
        action="store_true",
        help="send a fresh snapshot at a new revision, and remove the dead letters",
    )


def dead_letters_command(args: argparse.Namespace) -> int:
    if args.subscriber_ids and not args.retry:
        raise UsageError("SUBSCRIBER_ID goes with --retry; without it every dead letter is listed")
    with Api.from_args(args) as api:
        if args.retry:
            body: dict[str, Any] = {}
            if args.subscriber_ids:
                body["subscriber_ids"] = args.subscriber_ids
            answer = api.post(RETRY, body)
        else:
            answer = api.get(DEAD_LETTERS)
    if args.json:
        print_json(answer)
    elif args.retry:
        print(_retried(answer))
    else:
        print(_listing(answer.get("dead_letters", [])))
    return 0


def _listing(letters: list[dict[str, Any]]) -> str:
    if not letters:
        return "no dead letters"
    rows = [
        (
            d.get("id"),
            d.get("subscriber_id") or "-",
            d.get("topic"),
            d.get("revision") if d.get("revision") is not None else "-",
            d.get("size"),
            d.get("refused_at"),
            "WAITING" if d.get("superseded_by") is None else f"revision {d['superseded_by']}",
            d.get("reason"),
        )
        for d in letters
    ]
    headers = ["id", "subscriber-id", "topic", "revision", "bytes", "refused-at"]
    return table([*headers, "delivered-since", "reason"], rows)


def _retried(answer: dict[str, Any]) -> str:
    sent: list[str] = answer.get("subscriber_ids", [])
    unknown: list[str] = answer.get("unknown", [])
    removed = plural(int(answer.get("removed", 0)), "dead letter")
    lines = []
    if sent:
        lines.append(
            f"revision {answer.get('revision')}: fresh snapshot for "
            f"{plural(len(sent), 'subscriber')} ({', '.join(sent)}); {removed} removed"
        )
    else:
        lines.append(f"no snapshot sent; {removed} removed")
    if unknown:
        lines.append(f"no subscription (nothing to send): {', '.join(unknown)}")
    return "\n".join(lines)
