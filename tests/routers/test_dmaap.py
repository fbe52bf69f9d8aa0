"""What only the DMaaP router does, against a second instance of our server as the Message
Router; an httpx MockTransport stands in only for what our MR cannot show (auth headers,
partition keys, topic creation, a real DMaaP MR's answers).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from policy_pubsub.config import Settings
from policy_pubsub.exceptions import MessageRefused, NotFound, RouterUnavailable
from policy_pubsub.routers import OutMessage, from_url
from policy_pubsub.routers.dmaap import DmaapRouter
from policy_pubsub.store import Store
from tests.conftest import LiveServer, make_settings, start_server, stop_server, wait_for

Handler = Callable[[httpx.Request], httpx.Response]


@asynccontextmanager
async def _mr(path: Path, **overrides: Any) -> AsyncIterator[LiveServer]:
    """Our server as a DMaaP MR on the store in ``path``; stopped when the block ends."""
    path.mkdir(exist_ok=True)  # noqa: ASYNC240 - a test's tmp dir, before any I/O matters
    live, task = await start_server(make_settings(path, **overrides))
    try:
        yield live
    finally:
        await stop_server(live, task)


@asynccontextmanager
async def _router(url: str, **options: Any) -> AsyncIterator[DmaapRouter]:
    router = DmaapRouter(url, timeout=5, **options)
    try:
        yield router
    finally:
        await router.close()


def _recorder(answer: Handler | None = None) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """A transport that keeps every request and answers with ``answer`` (default: 200 {})."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request) if answer else httpx.Response(200, json={})

    return httpx.MockTransport(handle), seen


def _snap(topic: str, key: str | None, revision: int) -> OutMessage:
    body = f'{{"subscriber_id":"{key}","revision":{revision},"policies":{{"p":"café"}}}}'
    return OutMessage(topic=topic, body=body, key=key, revision=revision)


async def _poll(live: LiveServer, topic: str, group: str = "g") -> list[str]:
    async with httpx.AsyncClient(base_url=live.url) as http:
        r = await http.get(f"/events/{topic}/{group}/c", params={"timeout": 0, "limit": 1000})
    assert r.status_code == 200, r.text
    messages: list[str] = r.json()
    return messages


# -- publishing --------------------------------------------------------------------------------


async def test_published_messages_arrive_on_the_mr_unchanged_and_in_order(tmp_path: Path) -> None:
    """Messages published through the router arrive on the MR's topics as the same JSON
    strings, in publish order per topic.
    """
    batch = [
        _snap("t", "a", 1),
        _snap("t", "b", 2),
        _snap("u", "a", 3),
        _snap("t", "a", 4),
        OutMessage(topic="t", body='{"raw":true}'),
    ]
    async with _mr(tmp_path / "mr") as live, _router(f"dmaap+{live.url}") as router:
        await router.publish(batch)
        assert await _poll(live, "t") == [m.body for m in batch if m.topic == "t"]
        assert await _poll(live, "u") == [batch[2].body]


async def test_each_run_of_one_key_is_one_post_with_its_partition_key() -> None:
    """Consecutive messages with one topic and key go as one JSON-array POST carrying the
    key as ``partitionKey``, in the batch's order; the message bodies are sent unchanged,
    with no ``cambria.partition``.
    """
    transport, seen = _recorder()
    batch = [
        _snap("t", "a", 1),
        _snap("t", "a", 2),
        _snap("t", "b", 3),
        OutMessage(topic="t", body='{"raw":1}'),
        _snap("u", "a", 4),
        _snap("t", "a", 5),
    ]
    async with _router("dmaap+http://mr:3904", transport=transport) as router:
        await router.publish(batch)
    sent = [(r.method, r.url.path, dict(r.url.params), r.content.decode()) for r in seen]
    bodies = [m.body for m in batch]
    assert sent == [
        ("POST", "/events/t", {"partitionKey": "a"}, f"[{bodies[0]},{bodies[1]}]"),
        ("POST", "/events/t", {"partitionKey": "b"}, f"[{bodies[2]}]"),
        ("POST", "/events/t", {}, f"[{bodies[3]}]"),
        ("POST", "/events/u", {"partitionKey": "a"}, f"[{bodies[4]}]"),
        ("POST", "/events/t", {"partitionKey": "a"}, f"[{bodies[5]}]"),
    ]
    assert all(r.headers["content-type"] == "application/json" for r in seen)


@pytest.mark.parametrize("status", [400, 403, 404, 413])
async def test_a_permanent_4xx_refuses_that_message_after_publishing_those_before(
    status: int,
) -> None:
    """A 4xx other than 401, 407, 408 and 429 is ``MessageRefused`` for the message the MR
    refused, with its answer as the reason: the messages before it were posted, none after;
    in a POST of several messages each is sent again alone to tell which.
    """

    def answer(request: httpx.Request) -> httpx.Response:
        if b"bad" in request.content:
            return httpx.Response(status, json={"message": "no, thanks"})
        return httpx.Response(200, json={})

    transport, seen = _recorder(answer)
    bad = OutMessage("t", '{"bad":1}', key="b")
    batch = [_snap("t", "a", 1), OutMessage("t", '{"ok":1}', key="b"), bad, _snap("u", "c", 2)]
    async with _router("dmaap+http://mr", transport=transport) as router:
        with pytest.raises(MessageRefused) as refused:
            await router.publish(batch)
    assert refused.value.refused is bad
    assert refused.value.reason == f"message router answered {status}: no, thanks"
    assert [r.content.decode() for r in seen] == [
        f"[{batch[0].body}]",
        f"[{batch[1].body},{bad.body}]",
        f"[{batch[1].body}]",
        f"[{bad.body}]",
    ]


@pytest.mark.parametrize("status", [401, 407, 408, 429, 500, 503])
async def test_an_answer_a_retry_may_get_past_is_router_unavailable(status: int) -> None:
    """A 5xx, and a 401, 407, 408 or 429, is ``RouterUnavailable``: the relay retries."""
    transport, _ = _recorder(lambda _: httpx.Response(status, json={"message": "later"}))
    async with _router("dmaap+http://mr", transport=transport) as router:
        with pytest.raises(RouterUnavailable, match=str(status)):
            await router.publish([_snap("t", "a", 1)])


async def test_a_refusal_the_relay_retries_is_logged_once_not_at_every_retry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Ten publishes the MR refuses with 429 (retried by the relay) write one ERROR, with the
    MR's words; the repeats are left for the summary.
    """
    transport, seen = _recorder(lambda _: httpx.Response(429, json={"message": "slow down"}))
    async with _router("dmaap+http://mr", transport=transport) as router:
        with caplog.at_level(logging.ERROR, logger="policy_pubsub.routers.dmaap"):
            for _ in range(10):
                with pytest.raises(RouterUnavailable):
                    await router.publish([_snap("t", "a", 1)])
    assert len(seen) == 10
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "429 slow down" in errors[0], errors


async def test_a_large_run_is_split_into_posts_within_max_request_bytes() -> None:
    """A run bigger than ``max_request_bytes`` goes as several POSTs, in order, each within
    the limit (a single larger message still goes alone).
    """
    transport, seen = _recorder()
    batch = [OutMessage("t", f'{{"n":{n},"pad":"{"x" * 20}"}}', key="a") for n in range(5)]
    batch.append(OutMessage("t", f'{{"big":"{"y" * 200}"}}', key="a"))
    async with _router("dmaap+http://mr", transport=transport, max_request_bytes=80) as router:
        await router.publish(batch)
    arrays = [orjson.loads(r.content) for r in seen]
    assert [len(a) for a in arrays] == [2, 2, 1, 1]
    assert [m for a in arrays for m in a] == [orjson.loads(m.body) for m in batch]
    assert all(len(r.content) <= 80 for r in seen[:-1])


async def test_topics_are_created_once_before_their_first_publish_when_asked() -> None:
    """With ``create_topics`` each new topic is created once (``POST /topics/create``; 409
    "exists" is fine) before its first publish, and a refused creation publishes nothing.
    """

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/topics/create":
            name = orjson.loads(request.content)["topicName"]
            return httpx.Response({"t": 200, "u": 409}.get(name, 403), json={"message": "no"})
        return httpx.Response(200, json={})

    transport, seen = _recorder(answer)
    async with _router("dmaap+http://mr", transport=transport, create_topics=True) as router:
        await router.publish([_snap("t", "a", 1), _snap("u", "a", 2)])
        await router.publish([_snap("t", "a", 3), _snap("u", "a", 4)])
        with pytest.raises(RouterUnavailable, match="403 to create topic 'v': no"):
            await router.publish([_snap("v", "a", 5)])
    assert [r.url.path for r in seen] == [
        "/topics/create",
        "/events/t",
        "/topics/create",
        "/events/u",
        "/events/t",
        "/events/u",
        "/topics/create",
    ]
    assert orjson.loads(seen[0].content) == {
        "topicName": "t",
        "topicDescription": "policy-pubsub snapshots",
        "partitionCount": 1,
        "replicationCount": 1,
        "transactionEnabled": False,
    }


# -- errors ------------------------------------------------------------------------------------


async def test_a_4xx_from_the_mr_refuses_the_message_with_the_mrs_words(tmp_path: Path) -> None:
    """A real MR that refuses a message (400 here) makes ``MessageRefused`` carrying that
    message and the MR's own words; the router logs nothing (the relay logs the dead letter).
    """
    bad = OutMessage(topic="t", body="[1]")
    async with _mr(tmp_path / "mr") as live, _router(f"dmaap+{live.url}") as router:
        with pytest.raises(MessageRefused) as refused:
            await router.publish([bad])
    assert refused.value.refused is bad
    assert refused.value.reason.startswith("message router answered 400: ")
    assert "Message 0 is not a JSON object." in refused.value.reason


async def test_5xx_and_short_publishes_raise_router_unavailable() -> None:
    """A 5xx answer, or an MR that took fewer messages than were sent, raises
    RouterUnavailable, never an httpx error.
    """

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/events/down"):
            return httpx.Response(503, json={"status": 503, "mrstatus": 5003, "message": "busy"})
        return httpx.Response(200, json={"count": 1, "serverTimeMs": 0})

    transport, _ = _recorder(answer)
    async with _router("dmaap+http://mr", transport=transport) as router:
        with pytest.raises(RouterUnavailable, match="503 to publish to topic 'down': busy"):
            await router.publish([_snap("down", "a", 1)])
        with pytest.raises(RouterUnavailable, match="took 1 of 2"):
            await router.publish([_snap("t", "a", 1), _snap("t", "a", 2)])
        with pytest.raises(RouterUnavailable, match="503"):
            await router.read("down", "g", "c", timeout=0, limit=1)


async def test_an_unknown_topic_is_not_found_on_a_real_mr_shape() -> None:
    """A 404 from the MR on a poll or a topic description becomes NotFound for that topic."""
    transport, _ = _recorder(lambda r: httpx.Response(404, json={"message": "No such topic"}))
    async with _router("dmaap+http://mr", transport=transport) as router:
        with pytest.raises(NotFound) as read_error:
            await router.read("t", "g", "c", timeout=0, limit=1)
        with pytest.raises(NotFound) as stats_error:
            await router.stats("t")
    assert (read_error.value.kind, read_error.value.key) == ("topic", "t")
    assert (stats_error.value.kind, stats_error.value.key) == ("topic", "t")


async def test_mr_down_raises_router_unavailable_and_the_router_recovers(tmp_path: Path) -> None:
    """While the MR is down, publish, ping and read raise RouterUnavailable; once it is back
    on its address, the same router publishes and reads again.
    """
    message = _snap("t", "a", 1)
    async with _mr(tmp_path / "mr") as live:  # only to find a free port for the MR
        url, port = f"dmaap+{live.url}", live.server.port
    router = DmaapRouter(url, timeout=2)
    try:
        async with _mr(tmp_path / "mr", port=port):
            await router.publish([message])
        with pytest.raises(RouterUnavailable, match="unreachable"):
            await router.publish([_snap("t", "a", 2)])
        with pytest.raises(RouterUnavailable, match="unreachable"):
            await router.ping()
        with pytest.raises(RouterUnavailable, match="unreachable"):
            await router.read("t", "g", "c", timeout=0, limit=10)
        async with _mr(tmp_path / "mr", port=port):
            await router.ping()
            await router.publish([_snap("t", "a", 3)])
            async with await router.read("t", "g", "c", timeout=0, limit=10) as delivery:
                assert list(delivery.messages) == [message.body, _snap("t", "a", 3).body]
    finally:
        await router.close()


# -- reading -----------------------------------------------------------------------------------


async def test_gone_cancels_the_upstream_poll_and_consumes_nothing(tmp_path: Path) -> None:
    """When the client leaves, the router closes its poll on the MR, which stops holding it,
    and a message published afterwards still reaches the group.
    """
    async with _mr(tmp_path / "mr") as live, _router(f"dmaap+{live.url}") as router:
        held = live.state.router
        await router.publish([_snap("t", "a", 1)])
        async with await router.read("t", "g", "c", timeout=0, limit=10) as delivery:
            assert len(delivery.messages) == 1
        gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        reader = asyncio.create_task(router.read("t", "g", "c", timeout=30, limit=10, gone=gone))
        await wait_for(lambda: held.held_reads == 1)
        gone.set_result(None)
        assert list((await asyncio.wait_for(reader, timeout=5)).messages) == []
        await wait_for(lambda: held.held_reads == 0)
        await router.publish([_snap("t", "a", 2)])
        async with await router.read("t", "g", "c", timeout=0, limit=10) as delivery:
            assert list(delivery.messages) == [_snap("t", "a", 2).body]


async def test_read_passes_timeout_and_limit_and_accepts_arrays_of_objects() -> None:
    """A read asks the MR for the timeout in milliseconds and the limit, and takes an answer
    of JSON objects as well as of strings.
    """
    answer = httpx.Response(200, json=[{"a": 1}, '{"b":2}'])
    transport, seen = _recorder(lambda r: answer)
    async with _router("dmaap+http://mr/prefix", transport=transport) as router:
        delivery = await router.read("t", "g:1", "c", timeout=1.5, limit=7)
    assert list(delivery.messages) == ['{"a":1}', '{"b":2}']
    [request] = seen
    assert request.url.path == "/prefix/events/t/g:1/c"
    assert dict(request.url.params) == {"timeout": "1500", "limit": "7"}


async def test_stats_of_a_real_dmaap_mr_have_no_counts() -> None:
    """A real DMaaP MR describes a topic by name, owner and ACLs only: its stats carry the
    name, no messages, no times and no groups.
    """
    acl = {"enabled": False, "users": []}
    details = {"name": "t", "description": "", "owner": "", "readerAcl": acl, "writerAcl": acl}
    transport, _ = _recorder(lambda r: httpx.Response(200, json=details))
    async with _router("dmaap+http://mr", transport=transport) as router:
        stats = await router.stats("t")
    assert (stats.name, stats.messages, stats.last_published_at) == ("t", 0, None)
    assert (stats.oldest_unread_at, stats.consumer_groups) == (None, [])


# -- configuration -----------------------------------------------------------------------------


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_basic_auth_comes_from_the_url_userinfo() -> None:
    """Credentials in the URL's userinfo are percent-decoded and sent as basic auth, and are
    kept out of the router's logged URL.
    """
    transport, seen = _recorder()
    settings = Settings(dmaap_username="ignored", dmaap_password="ignored")
    url = "dmaap+https://us%20er:p%40ss%3Aw@mr.example:3905/mr/"
    router = DmaapRouter.from_settings(url, settings, transport=transport)
    try:
        await router.ping()
    finally:
        await router.close()
    assert router.url == "https://mr.example:3905/mr"
    assert str(seen[0].url) == "https://mr.example:3905/mr/topics"
    assert seen[0].headers["authorization"] == _basic("us er", "p@ss:w")


async def test_basic_auth_comes_from_settings_and_is_absent_without_them() -> None:
    """Without userinfo the settings' credentials are sent, and with neither no
    Authorization header is.
    """
    transport, seen = _recorder()
    with_auth = Settings(dmaap_username="svc", dmaap_password="pw")
    for settings in (with_auth, Settings()):
        router = DmaapRouter.from_settings("dmaap+http://mr:3904", settings, transport=transport)
        try:
            await router.ping()
        finally:
            await router.close()
    assert seen[0].headers["authorization"] == _basic("svc", "pw")
    assert "authorization" not in seen[1].headers


async def test_from_url_chooses_the_dmaap_backend(tmp_path: Path) -> None:
    """``from_url`` builds a DmaapRouter for dmaap+http and dmaap+https URLs, carrying
    messages of at most ``dmaap_max_message_bytes``.
    """
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    try:
        for url, base in [
            ("dmaap+http://mr:3904", "http://mr:3904"),
            ("dmaap+https://u:p@[::1]:3905", "https://[::1]:3905"),
        ]:
            router = from_url(url, store, make_settings(tmp_path, dmaap_max_message_bytes=5000))
            try:
                assert isinstance(router, DmaapRouter)
                assert router.url == base
                assert router.max_message_bytes == 5000
            finally:
                await router.close()
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("url", "options", "error"),
    [
        ("dmaap+http://", {}, "not a DMaaP router URL"),
        ("dmaap+http://mr:3904?x=1", {}, "no query"),
        ("dmaap+https://mr", {"insecure": True, "ca_file": "ca.pem"}, "exclude each other"),
        ("dmaap+https://mr", {"ca_file": "/nonexistent/ca.pem"}, "not a readable PEM"),
    ],
)
def test_bad_configuration_fails_at_construction(
    url: str, options: dict[str, Any], error: str
) -> None:
    """A malformed URL or contradictory TLS options fail when the router is built."""
    with pytest.raises(ValueError, match=error):
        DmaapRouter(url, **options)


def _make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate for 127.0.0.1 signed by it: (ca, cert, key)."""
    ca_key, ca, key, csr, cert = (directory / n for n in ("ca.key", "ca.pem", "k", "csr", "c"))
    ext = directory / "ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")

    def openssl(*args: object) -> None:
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", 1, "-subj", "/CN=ca")
    openssl("req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    signing = ("-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", 1, "-extfile", ext)
    openssl("x509", "-req", "-in", csr, *signing, "-out", cert)
    return ca, cert, key


async def test_tls_is_verified_by_default_against_the_ca_file_or_skipped_if_insecure(
    tmp_path: Path,
) -> None:
    """Against an MR with a certificate from a private CA, the router refuses by default and
    with another CA's file, connects when ``dmaap_ca_file`` names that CA, and connects
    unchecked with ``dmaap_insecure``.
    """
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed; it makes the test certificates")
    ca, cert, key = _make_certificates(tmp_path)
    (tmp_path / "other").mkdir()
    other_ca, _, _ = _make_certificates(tmp_path / "other")
    tls = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    async with _mr(tmp_path / "mr", **tls) as live:
        url = f"dmaap+https://127.0.0.1:{live.server.port}"
        cases = [(make_settings(tmp_path), False)]
        cases.append((make_settings(tmp_path, dmaap_ca_file=str(other_ca)), False))
        cases.append((make_settings(tmp_path, dmaap_ca_file=str(ca)), True))
        cases.append((make_settings(tmp_path, dmaap_insecure=True), True))
        for settings, reachable in cases:
            router = DmaapRouter.from_settings(url, settings)
            try:
                if reachable:
                    await router.ping()
                else:
                    with pytest.raises(RouterUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
                        await router.ping()
            finally:
                await router.close()
