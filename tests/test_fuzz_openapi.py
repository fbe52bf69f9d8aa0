"""Property-based fuzzing of ``/openapi.json`` with schemathesis against a live server.

For every operation of the document, schemathesis draws requests that fit the document
(positive) and requests that do not (negative), sends them to a real server, and checks each
answer: no 5xx, a documented status, the documented content type and headers, and a body
valid against the documented schema. A second, smaller run does the same on a server with an
auth file, each request sent as one of its users (or none, or wrong credentials).

The server runs in the test's event loop (``start_server``); schemathesis, which sends with
blocking ``requests``, runs in a worker thread so the loop keeps serving. The run is bounded:
a fixed number of examples per operation and generation mode, no shrinking (the first failing
example is reported with a curl line to replay it), a per-request timeout, and long-polls
held at most ``POLL_MS`` (the document's ``timeout`` maximum is lowered to it, and the
server's ``max_poll_timeout_ms`` clamps whatever a negative example asks for).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import CheckFunction, ignored_auth, not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from policy_pubsub.testing import start_server, stop_server
from tests.api.users import PASSWORDS, TCA_TOKEN, auth_file, auth_toml, basic
from tests.conftest import make_settings

POLL_MS = 50
MAX_EXAMPLES = 20  # per operation and generation mode, without auth
AUTH_MAX_EXAMPLES = 8  # per operation and generation mode, with auth
REQUEST_TIMEOUT = 10.0  # seconds; a server that hangs fails the check instead of the run
CHECKS: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# With an auth file, also: an operation that declares security refuses the request when
# schemathesis re-sends it without credentials and with wrong ones.
AUTH_CHECKS: list[CheckFunction] = [*CHECKS, ignored_auth]
Operation = schemathesis.APIOperation[Any, Any, Any, Any]
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)

# Every request of the auth run goes as one of these: each role, a bearer token, nobody,
# and wrong credentials; admin twice as often, so that most requests get past the gate.
IDENTITIES: list[dict[str, str]] = [
    basic("admin", PASSWORDS["admin"]),
    basic("admin", PASSWORDS["admin"]),
    basic("pap", PASSWORDS["pap"]),
    basic("tca", PASSWORDS["tca"]),
    {"Authorization": f"Bearer {TCA_TOKEN}"},
    {"Authorization": "Bearer not-a-token"},
    basic("admin", "wrong"),
    {},
]


def bounded(document: Mapping[str, Any]) -> dict[str, Any]:
    """The document with the long-poll ``timeout`` at most ``POLL_MS``, so polls stay short."""
    copied = copy.deepcopy(dict(document))
    timeout = copied["components"]["parameters"]["timeout"]["schema"]
    timeout["maximum"] = POLL_MS
    timeout["default"] = POLL_MS
    return copied


def fuzz(
    url: str,
    max_examples: int,
    checks: list[CheckFunction],
    identities: list[dict[str, str]] | None = None,
) -> list[str]:
    """Fuzz every operation of the server at ``url``; one entry per failing operation and
    generation mode. Blocking: run it in a worker thread.
    """
    document = httpx.get(f"{url}/openapi.json", timeout=REQUEST_TIMEOUT).raise_for_status()
    schema = schemathesis.openapi.from_dict(bounded(document.json()))
    failures: list[str] = []
    fuzzed = set()
    for result in schema.get_all_operations():
        if not isinstance(result, Ok):
            failures.append(f"an operation schemathesis cannot read: {result.err()}")
            continue
        operation = result.ok()
        fuzzed.add(operation.label)
        for mode in MODES:
            run = _runner(operation, mode, url, max_examples, checks, identities)
            try:
                run()
            except hypothesis.errors.Unsatisfiable:
                # Nothing of this operation can be made invalid (no body, no constrained
                # parameter): there is no negative example to send.
                if mode is not schemathesis.GenerationMode.NEGATIVE:
                    raise
            except (Exception, FailureGroup) as exc:  # every failure, in one report
                failures.append(f"{operation.label} [{mode.value}]: {exc}")
    documented = {
        f"{method.upper()} {path}"
        for path, item in document.json()["paths"].items()
        for method in item
    }
    if fuzzed != documented:
        failures.append(f"not fuzzed: {sorted(documented - fuzzed)}")
    return failures


def _runner(
    operation: Operation,
    mode: schemathesis.GenerationMode,
    url: str,
    max_examples: int,
    checks: list[CheckFunction],
    identities: list[dict[str, str]] | None,
) -> Callable[[], None]:
    who = st.sampled_from(identities) if identities else st.just({})

    @hypothesis.settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode), headers=who)
    def run(case: schemathesis.Case[Operation], headers: dict[str, str]) -> None:
        case.call_and_validate(
            base_url=url, headers=headers or None, checks=checks, timeout=REQUEST_TIMEOUT
        )

    return run


async def test_fuzzing_the_document_finds_nothing(tmp_path: Path) -> None:
    """Schemathesis' positive and negative examples of every documented operation get no 5xx,
    and each answer has a documented status, content type, headers and body schema.

    One store is enough here: the document and its answers do not depend on the store, and
    every store-specific answer (refusals, unavailability) has its own test on both stores.
    """
    live, task = await start_server(make_settings(tmp_path, max_poll_timeout_ms=POLL_MS))
    try:
        failures = await asyncio.to_thread(fuzz, live.url, MAX_EXAMPLES, CHECKS)
    finally:
        await stop_server(live, task)
    assert not failures, "\n\n".join(failures)


async def test_fuzzing_with_auth_finds_nothing(tmp_path: Path) -> None:
    """With an auth file, examples sent as each user (or nobody, or with wrong credentials)
    also get only documented answers, 401 and 403 included, never a 5xx, and no operation
    that declares security answers 2xx without valid credentials.
    """
    path = auth_file(tmp_path, auth_toml(["policies_*", "t*"], ["policies_DCAE_*"]))
    settings = make_settings(
        tmp_path, max_poll_timeout_ms=POLL_MS, auth_file=str(path), metrics_public=False
    )
    live, task = await start_server(settings)
    try:
        failures = await asyncio.to_thread(
            fuzz, live.url, AUTH_MAX_EXAMPLES, AUTH_CHECKS, IDENTITIES
        )
    finally:
        await stop_server(live, task)
    assert not failures, "\n\n".join(failures)
