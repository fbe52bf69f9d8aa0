"""Push ToscaPolicy JSON files to a policy-pubsub server, the way a PAP integration would.

Run it against a server (``policy-pubsub serve`` listens on http://127.0.0.1:6969):

    python examples/pap_push.py                       # the sample policies in examples/policies
    python examples/pap_push.py my.policy.json --url http://pdp.example:6969

Each file holds one ToscaPolicy object, a list of them, or ``{"policies": [...]}``. All the
policies go in one ``POST /pap/v1/policies``, which deploys all of them or none. The script
prints what was deployed and how many subscribers were notified. It exits 0 on success, 1 when
the server answers an error or cannot be reached, 2 when a file cannot be used; every failure
is one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:6969"
SAMPLES = Path(__file__).resolve().parent / "policies"


class Usage(Exception):
    """A file that cannot be pushed: the message says which and why."""


def is_policy(data: Any) -> bool:
    """A ToscaPolicy has a type and a name or policy-id; a PDP message has a messageName."""
    return (
        isinstance(data, dict)
        and "messageName" not in data
        and isinstance(data.get("type"), str)
        and ("name" in data or "policy-id" in data.get("metadata", {}))
    )


def sample_files() -> list[Path]:
    """The files in examples/policies that hold a policy (not the PDP_UPDATE message)."""
    return [
        path
        for path in sorted(SAMPLES.glob("*.json"))
        if is_policy(json.loads(path.read_text(encoding="utf-8")))
    ]


def read_policies(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise Usage(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise Usage(f"{path} is not valid JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("policies"), list):
        data = data["policies"]
    policies = data if isinstance(data, list) else [data]
    for index, policy in enumerate(policies):
        if not is_policy(policy):
            raise Usage(f"{path}: item {index} is not a ToscaPolicy (it needs type and name)")
    return policies


def push(url: str, policies: list[dict[str, Any]], timeout: float) -> dict[str, Any]:
    """``POST /pap/v1/policies``; the answer, or ``RuntimeError`` with a one-line reason."""
    endpoint = f"{url.rstrip('/')}/pap/v1/policies"
    try:
        answer = httpx.post(endpoint, json={"policies": policies}, timeout=timeout)
    except httpx.HTTPError as exc:
        raise RuntimeError(f"cannot reach {endpoint}: {exc or type(exc).__name__}") from None
    if not answer.is_success:
        raise RuntimeError(f"{endpoint} answered {answer.status_code}: {error_text(answer)}")
    result: dict[str, Any] = answer.json()
    return result


def error_text(answer: httpx.Response) -> str:
    """The ``error`` sentence of an ONAP-shaped error answer, else the start of the body."""
    try:
        body = answer.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    return answer.text[:200].replace("\n", " ") or answer.reason_phrase


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Deploy ToscaPolicy JSON files on a policy-pubsub server "
        "(POST /pap/v1/policies) and report what changed.",
        epilog=f"With no FILE, pushes the sample policies in {SAMPLES}.",
    )
    parser.add_argument(
        "files", nargs="*", type=Path, metavar="FILE", help="a ToscaPolicy JSON file"
    )
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the server (default {DEFAULT_URL})")
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for the answer (default 10)",
    )
    args = parser.parse_args(argv)
    try:
        files = args.files or sample_files()
        policies = [policy for path in files for policy in read_policies(path)]
    except Usage as exc:
        print(f"pap_push: {exc}", file=sys.stderr)
        return 2
    if not policies:
        print("pap_push: no policy to push", file=sys.stderr)
        return 2
    try:
        result = push(args.url, policies, args.timeout)
    except RuntimeError as exc:
        print(f"pap_push: {exc}", file=sys.stderr)
        return 1
    for ident in result["deployed"]:
        print(f"deployed {ident['policy-id']} {ident['policy-version']}")
    for ident in result["undeployed"]:
        print(f"undeployed {ident['policy-id']} {ident['policy-version']}")
    unchanged = len(policies) - len(result["deployed"])
    print(
        f"revision {result['revision']}: {len(result['deployed'])} deployed, "
        f"{unchanged} already deployed, {result['notified']} "
        f"{'subscriber' if result['notified'] == 1 else 'subscribers'} notified"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
