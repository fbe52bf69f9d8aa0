"""The PAP webhook signature: over method, path, time, nonce and body, accepted once within
its window, on every store and across replicas; the legacy body-only scheme only when asked.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from policy_pubsub import constants, webhook_signature
from policy_pubsub.client.http import HttpClient
from policy_pubsub.config import Settings
from policy_pubsub.testing import start_server, stop_server
from tests.api.helpers import POLICIES, tosca

SECRET = "webhook-shared-secret"
HEADER = constants.SIGNATURE_HEADER
CHALLENGE = f'HMAC-SHA256 realm="policy-pubsub", header="{HEADER}"'
ACCESS_LOGGER = "policy_pubsub.api.access"
JSON = {"Content-Type": "application/json"}


def push_body(*ids: str) -> bytes:
    return orjson.dumps({"policies": [tosca(i) for i in ids]})


def signed(
    method: str, target: str, body: bytes = b"", *, shift: int = 0, **options: Any
) -> dict[str, str]:
    """Headers signing a request ``shift`` seconds from now (a fresh nonce)."""
    header = webhook_signature.sign(
        SECRET, method, target.encode(), body, timestamp=int(time.time()) + shift, **options
    )
    return {**JSON, HEADER: header}


def with_secret(settings: Settings, **overrides: Any) -> Settings:
    return settings.model_copy(update={"pap_webhook_secret": SecretStr(SECRET), **overrides})


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    live, task = await start_server(settings)
    try:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
            yield http
    finally:
        await stop_server(live, task)


async def deployed(http: httpx.AsyncClient) -> list[str]:
    r = await http.get(POLICIES, headers=signed("GET", POLICIES))
    assert r.status_code == 200, r.text
    return sorted(p["policy-id"] for p in r.json()["policies"])


def assert_refused(r: httpx.Response, words: str) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["WWW-Authenticate"] == CHALLENGE
    answer = r.json()
    assert answer["code"] == "UNAUTHORIZED"
    assert words in answer["error"], answer["error"]


async def test_a_signed_request_passes_once(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A correct signature deploys; the very same request sent again is a 401 that changes
    nothing, logged as one WARNING with the client's address and the reason, without the
    secret or the signature.
    """
    caplog.set_level(logging.WARNING, logger=ACCESS_LOGGER)
    async with serving(with_secret(settings)) as http:
        body = push_body("p1")
        headers = signed("POST", POLICIES, body)
        first = await http.post(POLICIES, content=body, headers=headers)
        assert first.status_code == 200, first.text
        undeploy = signed("DELETE", f"{POLICIES}/p1")
        caplog.clear()
        replayed = await http.post(POLICIES, content=body, headers=headers)
        assert_refused(replayed, "used before")
        [line] = [r for r in caplog.records if r.name == ACCESS_LOGGER]
        assert line.levelno == logging.WARNING
        message = line.getMessage()
        assert "127.0.0.1:" in message and "replayed" in message, message
        assert SECRET not in message and headers[HEADER].split("v1=")[1] not in message
        assert (await http.delete(f"{POLICIES}/p1", headers=undeploy)).status_code == 200
        assert_refused(await http.delete(f"{POLICIES}/p1", headers=undeploy), "used before")
        assert await deployed(http) == []


async def test_identical_requests_signed_apart_both_pass(settings: Settings) -> None:
    """Two identical requests in the same second, each signed with its own nonce, both pass;
    so do the SDK client's (and the CLI's) repeated requests.
    """
    async with serving(with_secret(settings)) as http:
        now = int(time.time())
        for _ in range(2):
            r = await http.get(POLICIES, headers=signed("GET", POLICIES, shift=0))
            assert r.status_code == 200, r.text
        assert abs(now - int(time.time())) <= 1
        client = HttpClient(http, str(http.base_url), timeout=10, pap_secret=SECRET)
        for _ in range(3):
            assert (await client.request("GET", POLICIES)).body == {"policies": []}
        reply = await client.request("POST", POLICIES, body={"policies": [tosca("p1")]})
        assert [d["policy-id"] for d in reply.body["deployed"]] == ["p1"]
        assert await deployed(http) == ["p1"]


@pytest.mark.parametrize("shift", [-301, -3600, 301, 10**6])
async def test_a_time_outside_the_window_is_refused(settings: Settings, shift: int) -> None:
    """A signature more than the window (300 s) behind or ahead of the server's clock is a
    401 that deploys nothing; one well inside the window passes.
    """
    async with serving(with_secret(settings)) as http:
        body = push_body("p1")
        r = await http.post(
            POLICIES, content=body, headers=signed("POST", POLICIES, body, shift=shift)
        )
        assert_refused(r, "ahead of" if shift > 0 else "behind")
        assert await deployed(http) == []
        inside = -250 if shift < 0 else 250
        r = await http.post(
            POLICIES, content=body, headers=signed("POST", POLICIES, body, shift=inside)
        )
        assert r.status_code == 200, r.text


async def test_the_window_is_a_setting(settings: Settings) -> None:
    """``pap_signature_window_seconds`` narrows the window."""
    async with serving(with_secret(settings, pap_signature_window_seconds=5)) as http:
        assert_refused(
            await http.get(POLICIES, headers=signed("GET", POLICIES, shift=-30)), "s are"
        )
        assert (
            await http.get(POLICIES, headers=signed("GET", POLICIES, shift=-2))
        ).status_code == 200


async def test_a_signature_covers_method_path_query_and_body(settings: Settings) -> None:
    """A signature made for one method, path, query or body does not pass for another, and
    a wrong secret never passes; nothing changes.
    """
    async with serving(with_secret(settings)) as http:
        await http.post(
            POLICIES,
            content=push_body("p1", "p2"),
            headers=signed("POST", POLICIES, push_body("p1", "p2")),
        )
        body = push_body("p3")
        attempts = [
            ("POST", POLICIES, push_body("p4"), signed("POST", POLICIES, body)),
            ("POST", "/pap/v1/pdp-update", body, signed("POST", POLICIES, body)),
            ("DELETE", f"{POLICIES}/p2", b"", signed("DELETE", f"{POLICIES}/p1")),
            ("DELETE", f"{POLICIES}/p1", b"", signed("GET", f"{POLICIES}/p1")),
            ("DELETE", f"{POLICIES}/p1?x=1", b"", signed("DELETE", f"{POLICIES}/p1")),
            ("DELETE", f"{POLICIES}/p1", b"", signed("DELETE", f"{POLICIES}/p1?x=1")),
            ("DELETE", f"{POLICIES}/p1", b"", signed("delete", f"{POLICIES}/p1", nonce="n" * 8)),
        ]
        wrong_key = webhook_signature.sign("another secret", "POST", POLICIES.encode(), body)
        attempts.append(("POST", POLICIES, body, {**JSON, HEADER: wrong_key}))
        for method, target, content, headers in attempts[:-2]:
            r = await http.request(method, target, content=content, headers=headers)
            assert_refused(r, "does not match")
        # The method is signed in upper case, whatever case the signer wrote it in.
        method, target, content, headers = attempts[-2]
        assert (
            await http.request(method, target, content=content, headers=headers)
        ).status_code == 200
        method, target, content, headers = attempts[-1]
        assert_refused(
            await http.request(method, target, content=content, headers=headers), "does not match"
        )
        assert await deployed(http) == ["p2"]


MALFORMED = (
    "",
    "t=1",
    "v1=" + "0" * 64,
    "t=abc,nonce=abcdefgh,v1=" + "0" * 64,
    "t=1,nonce=short,v1=" + "0" * 64,
    "t=1,nonce=abcdefgh,v1=xyz",
    "t=1,t=2,nonce=abcdefgh,v1=" + "0" * 64,
    "t=1,nonce=abcdefgh,v1=" + "0" * 64 + ",v0=1",
    "t=99999999999999999999,nonce=abcdefgh,v1=" + "0" * 64,
    "sha256",
    "\u00e9" * 10,
)


async def test_a_malformed_header_is_refused(settings: Settings) -> None:
    """A header that is not ``t=...,nonce=...,v1=...`` is a 401 that says how to sign."""
    async with serving(with_secret(settings)) as http:
        for header in MALFORMED:
            r = await http.get(POLICIES, headers={HEADER: header.encode()})
            assert r.status_code == 401, f"{header!r}: {r.text}"
            assert r.headers["WWW-Authenticate"] == CHALLENGE


def legacy(body: bytes) -> dict[str, str]:
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {**JSON, HEADER: f"sha256={digest}"}


async def test_the_legacy_scheme_is_refused_unless_turned_on(settings: Settings) -> None:
    """``sha256=<HMAC of the body>`` is a 401 by default; with ``pap_signature_legacy`` it
    passes (and, as documented, can be replayed), and the current scheme still works.
    """
    body = push_body("p1")
    async with serving(with_secret(settings)) as http:
        assert_refused(
            await http.post(POLICIES, content=body, headers=legacy(body)), "not accepted"
        )
        assert_refused(await http.get(POLICIES, headers=legacy(b"")), "not accepted")
        assert await deployed(http) == []
    async with serving(with_secret(settings, pap_signature_legacy=True)) as http:
        for _ in range(2):
            r = await http.post(POLICIES, content=body, headers=legacy(body))
            assert r.status_code == 200, r.text
        assert_refused(
            await http.post(POLICIES, content=body, headers=legacy(b"")), "does not match"
        )
        r = await http.post(POLICIES, content=body, headers=signed("POST", POLICIES, body))
        assert r.status_code == 200, r.text
        assert await deployed(http) == ["p1"]


@pytest.mark.parametrize("settings", ["postgresql"], indirect=True)
async def test_a_replay_to_another_replica_is_refused(settings: Settings) -> None:
    """Two servers on one PostgreSQL store: a request accepted by one is refused by the
    other, and the same signed request sent to both at once passes on exactly one.
    """
    settings = with_secret(settings)
    async with serving(settings) as first, serving(settings) as second:
        body = push_body("p1")
        headers = signed("POST", POLICIES, body)
        assert (await first.post(POLICIES, content=body, headers=headers)).status_code == 200
        assert_refused(await second.post(POLICIES, content=body, headers=headers), "used before")
        for attempt in range(5):
            body = push_body(f"race-{attempt}")
            headers = signed("POST", POLICIES, body)
            answers = await asyncio.gather(
                *(http.post(POLICIES, content=body, headers=headers) for http in (first, second))
            )
            assert sorted(r.status_code for r in answers) == [200, 401], [r.text for r in answers]
