"""Credentials: sent with every request, kept out of messages, and a refusal is final."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx
import pytest

from policy_pubsub.client import PolicySubscriber
from policy_pubsub.exceptions import SubscriptionRejected
from tests.client.conftest import FAST

SUBSCRIBE_ANSWER = {"subscriber_topic": "t", "revision": 3, "policies": {}}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Server:
    """A stand-in server that answers the subscribe and holds each poll briefly, and
    records the Authorization header of every request by path.
    """

    def __init__(self, status: int = 201) -> None:
        self.status = status
        self.seen: list[tuple[str, str | None]] = []

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.url.path, request.headers.get("authorization")))
        if request.method == "POST" and self.status != 201:
            return httpx.Response(self.status, json={"code": "UNAUTHORIZED", "error": "Who?"})
        if request.method == "POST":
            return httpx.Response(201, json=SUBSCRIBE_ANSWER)
        await asyncio.sleep(0.01)
        return httpx.Response(200, json=[])


def subscriber(server: Server, url: str, **options: Any) -> PolicySubscriber:
    return PolicySubscriber(
        url,
        subscriber_id="s",
        subscriber_topic="t",
        policy_filters=[{"policy-id": "a"}],
        transport=httpx.MockTransport(server.handle),
        **{"timings": FAST, **options},
    )


async def polled(sub: PolicySubscriber) -> None:
    """Let it poll a few times (nothing comes)."""
    changes = sub.changes()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(changes), 0.1)


@pytest.mark.parametrize(
    ("options", "header"),
    [({"auth": ("tca", "pw")}, basic("tca", "pw")), ({"token": "t0k3n"}, "Bearer t0k3n")],
)
async def test_credentials_go_with_every_request(options: dict[str, object], header: str) -> None:
    """``auth=`` (HTTP Basic) or ``token=`` (Bearer) is sent on the subscribe and each poll."""
    server = Server()
    async with subscriber(server, "http://pdp.test", **options) as sub:
        await polled(sub)
    paths = {path for path, _ in server.seen}
    assert paths == {"/decision/v1/subscription/s", "/events/t/s/s"}
    assert {found for _, found in server.seen} == {header}


async def test_a_router_url_with_credentials_uses_its_own() -> None:
    """Credentials in ``router_url`` are used for the polls, ``auth=`` for the server."""
    server = Server()
    router = "http://mr:secret@mr.test:3904"
    async with subscriber(server, "http://pdp.test", auth=("tca", "pw"), router_url=router) as sub:
        await polled(sub)
    assert ("/decision/v1/subscription/s", basic("tca", "pw")) in server.seen
    polls = {found for path, found in server.seen if path.startswith("/events/")}
    assert polls == {basic("mr", "secret")}


async def test_a_refused_login_is_final_and_hides_the_password() -> None:
    """A 401 on the subscribe raises SubscriptionRejected at once, with the server's text,
    and the URL it names carries no password.
    """
    server = Server(status=401)
    with pytest.raises(SubscriptionRejected) as caught:
        async with subscriber(server, "http://tca:pw@pdp.test"):
            pytest.fail("entered with a refused login")
    assert (caught.value.status, caught.value.error) == (401, "Who?")
    assert "pw" not in str(caught.value) and caught.value.url.startswith("http://pdp.test/")
    assert len(server.seen) == 1
