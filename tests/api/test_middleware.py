"""The request middleware on its own: the request id on the answer, the count and the line."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from policy_pubsub import constants
from policy_pubsub.api.middleware import RequestMiddleware, new_request_id, path_problem
from policy_pubsub.logs import ACCESS_LOGGER, NO_ANSWER
from policy_pubsub.metrics import Metrics

HEADER = constants.REQUEST_ID_HEADER.lower().encode()


def test_new_request_ids_are_version_4_uuids() -> None:
    """A made-up request id is a random UUID written as ``str(uuid.uuid4())`` writes one."""
    made = {new_request_id() for _ in range(1000)}
    assert len(made) == 1000
    for text in made:
        parsed = uuid.UUID(text)
        assert (str(parsed), parsed.version, parsed.variant) == (text, 4, uuid.RFC_4122)


def _scope(headers: tuple[tuple[bytes, bytes], ...] = ()) -> Scope:
    return {
        "type": "http",
        "method": "GET",
        "path": "/x",
        "headers": list(headers),
        "client": ("127.0.0.1", 5000),
    }


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _run(app: Any, scope: Scope) -> tuple[list[Message], Metrics]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    metrics = Metrics()
    await RequestMiddleware(app, metrics=metrics)(scope, _receive, send)
    return sent, metrics


def _counted(metrics: Metrics, method: str, status: int) -> float | None:
    labels = {"method": method, "status": str(status)}
    return metrics.registry.get_sample_value("policy_pubsub_http_requests_total", labels)


async def test_the_request_id_replaces_one_the_endpoint_set(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The answer carries the request's id once, in place of one the endpoint set; the scope
    state and the log line carry it too.
    """

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["state"]["request_id"] == "given-1"
        headers = [(b"content-type", b"text/plain"), (HEADER, b"endpoint's")]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    caplog.set_level(logging.DEBUG, logger=ACCESS_LOGGER)
    sent, metrics = await _run(app, _scope(((HEADER, b"given-1"),)))
    assert sent[0]["headers"] == [(b"content-type", b"text/plain"), (HEADER, b"given-1")]
    assert _counted(metrics, "GET", 201) == 1
    [line] = [r for r in caplog.records if r.name == ACCESS_LOGGER]
    assert (line.__dict__["status"], line.__dict__["request_id"]) == (201, "given-1")


async def test_a_request_without_an_answer_is_counted_as_499() -> None:
    """A request that ends without starting an answer (the client left) counts as 499."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        return None

    sent, metrics = await _run(app, _scope())
    assert sent == []
    assert _counted(metrics, "GET", NO_ANSWER) == 1


async def test_a_request_that_raises_counts_as_500() -> None:
    """The metrics count a request whose endpoint raised before answering as a 500."""
    metrics = Metrics()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    async def send(message: Message) -> None:
        raise AssertionError("nothing is sent")

    with pytest.raises(RuntimeError):
        await RequestMiddleware(app, metrics=metrics)(_scope(), _receive, send)
    assert _counted(metrics, "GET", 500) == 1


@pytest.mark.parametrize(
    ("path", "raw", "refused"),
    [
        ("/topics", b"/topics", False),
        ("/topics/a b", b"/topics/a%20b", False),
        ("/topics/caf\u00e9", b"/topics/caf%C3%A9", False),
        ("/topics\n", b"/topics%0A", True),
        ("/topics\r", b"/topics%0d", True),
        ("/a\x00b", b"/a%00b", True),
        ("/a\x7f", b"/a%7F", True),
        ("/a\tb", b"/a%09b", True),
        ("/a%zz", b"/a%zz", True),
        ("/a%4", b"/a%4", True),
        ("/a%", b"/a%", True),
        ("/100%25", b"/100%25", False),
    ],
)
def test_paths_with_control_characters_or_bad_escapes_are_refused(
    path: str, raw: bytes, refused: bool
) -> None:
    """Control characters once decoded, and a % without two hex digits, are refused."""
    scope = {"type": "http", "path": path, "raw_path": raw}
    assert (path_problem(scope) is not None) == refused
