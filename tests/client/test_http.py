"""The HTTP client the SDK and the command line share: what it sends, how it reads answers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import httpx
import pytest

from policy_pubsub import constants
from policy_pubsub.client.http import USER_AGENT, HttpClient, TransientError
from policy_pubsub.exceptions import RequestRejected, SubscriptionRejected

SECRET = "s3cret"


class Server:
    """A fake server answering every request with one status and body, recording requests."""

    def __init__(self, status: int = 200, content: bytes = b"{}") -> None:
        self.status = status
        self.content = content
        self.seen: list[httpx.Request] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        return httpx.Response(self.status, content=self.content)

    def client(self, url: str = "http://pdp.test", pap_secret: str | None = None) -> HttpClient:
        http = httpx.AsyncClient(transport=httpx.MockTransport(self.handle))
        return HttpClient(http, url, timeout=5.0, pap_secret=pap_secret)


async def test_a_pap_request_is_signed_over_what_is_sent() -> None:
    """With a secret, a /pap/ request carries, under the header named in the wire constants,
    the HMAC of its time, a fresh nonce, its method, its path and query as sent and its exact
    body (empty when it has none); other paths carry none.
    """
    server = Server()
    http = server.client(url="http://pdp.test/base", pap_secret=SECRET)
    await http.request("POST", "/pap/v1/policies", body={"policies": [{"name": "é"}]})
    await http.request("DELETE", "/pap/v1/policies/a%20b", params={"x": "1 2"})
    await http.request("DELETE", "/pap/v1/policies/a%20b", params={"x": "1 2"})
    await http.request("POST", "/decision/v1", body={"policy-filters": []})
    posted, deleted, again, decided = server.seen
    nonces = set()
    for request in (posted, deleted, again):
        header = request.headers[constants.SIGNATURE_HEADER]
        fields = dict(part.split("=", 1) for part in header.split(","))
        assert set(fields) == {"t", "nonce", "v1"}
        assert abs(int(fields["t"]) - time.time()) < 5
        nonces.add(fields["nonce"])
        signed = "\n".join([fields["t"], fields["nonce"], request.method, ""]).encode()
        signed += request.url.raw_path + b"\n" + request.content
        assert fields["v1"] == hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    assert len(nonces) == 3, "two requests shared a nonce"
    assert deleted.url.raw_path == b"/base/pap/v1/policies/a%20b?x=1+2"
    assert json.loads(posted.content) == {"policies": [{"name": "é"}]}
    assert posted.headers["Content-Type"] == "application/json"
    assert deleted.content == b""
    assert constants.SIGNATURE_HEADER not in decided.headers
    assert decided.headers["User-Agent"] == USER_AGENT


async def test_answers_are_read_as_json_or_nothing() -> None:
    """A 2xx body is decoded; an empty one is None; a 404 the caller accepts is a reply."""
    assert (await Server(200, b'{"a": 1}').client().request("GET", "/x")).body == {"a": 1}
    assert (await Server(204, b"").client().request("DELETE", "/x")).body is None
    found = await Server(404, b'{"error": "No x."}').client().request("GET", "/x", accept_404=True)
    assert (found.status, found.body) == (404, None)


@pytest.mark.parametrize(
    ("status", "content", "error"),
    [
        (
            400,
            b'{"code": "BAD_REQUEST", "error": "bad  filter\\n", "details": [{"a": 1}]}',
            "bad filter",
        ),
        (
            404,
            b'{"status": 404, "mrstatus": 3001, "message": "No such topic exists.-[t]"}',
            "No such topic exists.-[t]",
        ),
        (403, b"", "Forbidden"),
    ],
)
async def test_a_4xx_is_rejected_with_the_servers_sentence(
    status: int, content: bytes, error: str
) -> None:
    """A 4xx raises the caller's RequestRejected with the ONAP ``error``, the DMaaP
    ``message`` or the reason phrase, on one line, and the URL without its password.
    """
    http = Server(status, content).client("http://u:pw@pdp.test")
    with pytest.raises(SubscriptionRejected) as caught:
        await http.request("POST", "/s", body={}, rejected=SubscriptionRejected)
    assert (caught.value.status, caught.value.error) == (status, error)
    assert caught.value.url == "http://pdp.test/s"
    if status == 400:
        assert caught.value.details == [{"a": 1}]


@pytest.mark.parametrize(
    ("status", "content", "kind"),
    [(503, b'{"error": "down"}', "status"), (429, b"", "status"), (200, b"<html>", "answer")],
)
async def test_what_may_heal_is_retry(status: int, content: bytes, kind: str) -> None:
    """5xx, 429 and an answer that is not JSON raise TransientError, saying which."""
    with pytest.raises(TransientError) as caught:
        await Server(status, content).client().request("GET", "/x")
    assert (caught.value.kind, caught.value.status) == (kind, status)
    assert not isinstance(caught.value, RequestRejected)


async def test_no_connection_is_retry_unreachable() -> None:
    """A refused connection raises TransientError of kind ``unreachable``, naming the error."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    http = HttpClient(
        httpx.AsyncClient(transport=httpx.MockTransport(refuse)), "http://pdp.test", timeout=1
    )
    with pytest.raises(TransientError) as caught:
        await http.request("GET", "/x")
    assert caught.value.kind == "unreachable"
    assert caught.value.reason == "ConnectError: Connection refused"


async def test_router_requests_use_the_routers_own_credentials() -> None:
    """A router URL with ``user:password@`` is asked with those, the server with ``auth``."""
    server = Server(200, b"[]")
    http = HttpClient(
        httpx.AsyncClient(transport=httpx.MockTransport(server.handle)),
        "http://pdp.test",
        timeout=1,
        router_url="http://mr:mr-pw@mr.test",
        auth=("tca", "pw"),
    )
    await http.request("GET", "/events/t/g/c", router=True)
    await http.request("GET", "/decision/v1/subscription/s")
    to_router, to_server = server.seen
    assert to_router.url.host == "mr.test"
    assert to_router.headers["Authorization"] == basic("mr", "mr-pw")
    assert to_server.headers["Authorization"] == basic("tca", "pw")


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
