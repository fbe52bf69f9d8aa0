"""Logs: one request line per HTTP request, after the answer, with its fields, at INFO for
changes, errors and slow reads and at DEBUG for the other reads; and the JSON format, one JSON
object per line, from ``serve --log-format json``.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from pathlib import Path

import httpx
import pytest

from policy_pubsub import constants
from policy_pubsub.logs import (
    ACCESS_LOGGER,
    CHATTY_LIBRARIES,
    LONG_POLL,
    NO_ANSWER,
    READ,
    SLOW_SECONDS,
    JsonFormatter,
    TextFormatter,
    configure,
    request_level,
)
from policy_pubsub.testing import LiveServer, start_server, stop_server
from tests.api.helpers import tosca
from tests.conftest import make_settings, wait_for
from tests.processes import ServerProcess

FIELDS = {"method", "path", "status", "duration_ms", "request_id", "client"}


def _request_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == ACCESS_LOGGER]


async def test_each_request_logs_one_line_with_its_fields(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each request logs exactly one line, with method, path, status, duration, the
    X-ONAP-RequestID and the client address; in JSON each is a key of the object. A read that
    went well logs at DEBUG, an error at INFO.
    """
    caplog.set_level(logging.DEBUG, logger=ACCESS_LOGGER)
    live, task = await start_server(make_settings(tmp_path))
    try:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
            ok = await http.get("/healthcheck", headers={constants.REQUEST_ID_HEADER: "rid-1"})
            missing = await http.get("/decision/v1/subscription/nobody")
    finally:
        await stop_server(live, task)
    assert (ok.status_code, missing.status_code) == (200, 404)
    lines = _request_lines(caplog)
    assert [(r.__dict__["path"], r.__dict__["status"]) for r in lines] == [
        ("/healthcheck", 200),
        ("/decision/v1/subscription/nobody", 404),
    ]
    first, second = lines
    assert (first.levelno, second.levelno) == (logging.DEBUG, logging.INFO)
    assert first.__dict__["request_id"] == "rid-1"
    assert second.__dict__["request_id"] == missing.headers[constants.REQUEST_ID_HEADER]
    document = json.loads(JsonFormatter().format(first))
    assert set(document) >= FIELDS
    assert document["method"] == "GET" and document["duration_ms"] >= 0
    assert document["client"].startswith("127.0.0.1:")
    assert document["logger"] == ACCESS_LOGGER and "rid-1" in document["message"]


@pytest.mark.parametrize(
    ("method", "status", "seconds", "kind", "level"),
    [
        ("POST", 200, 0.01, None, logging.INFO),  # a change: a PAP push, a subscribe
        ("DELETE", 204, 0.01, None, logging.INFO),
        ("GET", 200, 0.01, None, logging.DEBUG),  # a read that went well
        ("HEAD", 200, 0.01, None, logging.DEBUG),
        ("POST", 200, 0.01, READ, logging.DEBUG),  # the decision API
        ("GET", 200, SLOW_SECONDS, None, logging.INFO),  # a slow read
        ("POST", 200, SLOW_SECONDS, READ, logging.INFO),
        ("GET", 200, 0.01, LONG_POLL, logging.DEBUG),  # an answered long-poll
        ("GET", 200, 100.0, LONG_POLL, logging.DEBUG),  # held long: never slow
        ("GET", 404, 0.01, None, logging.INFO),  # every error
        ("POST", 400, 0.01, READ, logging.INFO),
        ("GET", 429, 0.01, LONG_POLL, logging.INFO),
        ("GET", NO_ANSWER, 30.0, LONG_POLL, logging.INFO),  # the client left
        ("GET", 503, 0.01, None, logging.INFO),
    ],
)
def test_request_level(method: str, status: int, seconds: float, kind: str, level: int) -> None:
    """Changes, errors and slow reads log at INFO; reads that went well, answered long-polls
    whatever their hold among them, at DEBUG.
    """
    assert request_level(method, status, seconds, kind) == level


async def test_at_info_reads_are_quiet_and_changes_are_logged_and_everything_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """At INFO a PAP push, a publish and a subscribe log their lines, an answered long-poll,
    a decision and a GET log none; the metrics count every one of them.
    """
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    live, task = await start_server(make_settings(tmp_path))
    try:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
            subscribe = await http.post(
                "/decision/v1/subscription/s1",
                json={"subscriber_topic": "t1", "policy-filters": [{"policy-id": "p1"}]},
            )
            push = await http.post("/pap/v1/policies", json={"policies": [tosca("p1")]})
            publish = await http.post("/events/t2", json={"n": 1})
            poll = await http.get("/events/t1/g/c", params={"timeout": 0})
            decision = await http.post(
                "/decision/v1", json={"action": "configure", "resource": {"policy-id": "p1"}}
            )
            listed = await http.get("/pap/v1/policies")
            metrics = (await http.get("/metrics")).text
    finally:
        await stop_server(live, task)
    assert [r.status_code for r in (subscribe, push, publish, poll, decision, listed)] == [
        201,
        200,
        200,
        200,
        200,
        200,
    ]
    assert len(poll.json()) == 2  # the subscribe snapshot and the push's
    logged = [(r.__dict__["method"], r.__dict__["path"]) for r in _request_lines(caplog)]
    assert logged == [
        ("POST", "/decision/v1/subscription/s1"),
        ("POST", "/pap/v1/policies"),
        ("POST", "/events/t2"),
    ]
    assert all(r.levelno == logging.INFO for r in _request_lines(caplog))
    counted = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in metrics.splitlines()
        if line.startswith("policy_pubsub_http_requests_total{")
    }
    assert counted['policy_pubsub_http_requests_total{method="POST",status="200"}'] == 3
    assert counted['policy_pubsub_http_requests_total{method="POST",status="201"}'] == 1
    assert counted['policy_pubsub_http_requests_total{method="GET",status="200"}'] == 2


async def test_an_abandoned_long_poll_logs_no_answer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A long-poll whose client goes away before any message logs its line with status 499
    once the server lets it go.
    """
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    live, task = await start_server(make_settings(tmp_path))
    try:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
            assert (await http.post("/events/t", json={"n": 0})).status_code == 200
            assert len((await http.get("/events/t/g/c", params={"timeout": 0})).json()) == 1
            poll = asyncio.create_task(http.get("/events/t/g/c", params={"timeout": 20000}))
            router = live.state.router
            await wait_for(lambda: router.held_reads == 1)
            poll.cancel()
            await asyncio.gather(poll, return_exceptions=True)
        await wait_for(
            lambda: any(r.__dict__["status"] == NO_ANSWER for r in _request_lines(caplog))
        )
    finally:
        await stop_server(live, task)


async def test_a_client_leaving_in_the_middle_of_a_body_logs_499_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A PAP push whose client hangs up half-way through the body logs one request line with
    status 499, no ERROR and no traceback, and changes nothing.
    """
    caplog.set_level(logging.INFO)
    live, task = await start_server(make_settings(tmp_path))
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", live.server.port)
        writer.write(
            b"POST /pap/v1/policies HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b'content-length: 1000\r\n\r\n{"policies": ['
        )
        await writer.drain()
        await wait_for(lambda: _body_started(live))
        writer.close()
        await wait_for(
            lambda: any(r.__dict__["status"] == NO_ANSWER for r in _request_lines(caplog))
        )
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
            assert (await http.get("/pap/v1/policies")).json()["policies"] == []
    finally:
        await stop_server(live, task)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "Traceback" not in caplog.text


def _body_started(live: LiveServer) -> bool:
    """Whether the server has a request in progress (its headers are in)."""
    return any(
        c.cycle is not None and not c.cycle.response_complete
        for c in live.server.server_state.connections
    )


async def test_serve_log_format_json_writes_one_object_per_line(tmp_path: Path) -> None:
    """``serve --log-format json`` writes every log line as one JSON object, a request line
    per request with its fields and request id, and no uvicorn access line.
    """
    server = ServerProcess(
        tmp_path / "store.db",
        tmp_path / "server.log",
        args=["--log-format", "json", "--log-level", "info"],
    )
    async with server, httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        r = await http.get(
            "/pap/v1/policies/absent", headers={constants.REQUEST_ID_HEADER: "json-1"}
        )
        assert r.status_code == 404  # logged at INFO, as every error is

        def logged() -> bool:
            return '"json-1"' in server.log.read_text()

        await wait_for(logged, timeout=10)
    lines = [
        line
        for line in server.log.read_text().splitlines()
        if line.strip() and not line.startswith("--- start")
    ]
    documents = []
    for line in lines:
        try:
            documents.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON object: {line!r}")
    for document in documents:
        assert isinstance(document, dict)
        assert set(document) >= {"time", "level", "logger", "message"}, document
    mine = [d for d in documents if d.get("request_id") == "json-1"]
    assert len(mine) == 1
    assert set(mine[0]) >= FIELDS
    assert (mine[0]["method"], mine[0]["path"], mine[0]["status"]) == (
        "GET",
        "/pap/v1/policies/absent",
        404,
    )
    assert not [d for d in documents if d["logger"] == "uvicorn.access"]


def test_text_log_escapes_control_characters_so_no_line_can_be_forged() -> None:
    """A request path with an encoded newline (``%0A`` arrives decoded) or other control
    characters gives one text line with the characters escaped; a traceback keeps its lines.
    """
    path = "/pap/v1/policies\n2026-01-01 00:00:00,000 INFO forged: \x00\x1b[31m\r\t"
    record = logging.LogRecord(
        ACCESS_LOGGER, logging.INFO, __file__, 1, '"GET %s" %d', (path, 404), None
    )
    line = TextFormatter().format(record)
    assert "\n" not in line and "\r" not in line and "\x00" not in line and "\x1b" not in line
    assert line.endswith(
        '"GET /pap/v1/policies\\n2026-01-01 00:00:00,000 INFO forged: \\x00\\x1b[31m\\r\\t" 404'
    )
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    text = TextFormatter().format(failed)
    assert text.splitlines()[0].endswith("x: failed")
    assert text.splitlines()[-1] == "ValueError: boom"


def test_libraries_that_log_each_request_are_heard_at_debug_only() -> None:
    """At INFO, httpx's line for each request the server makes (a DMaaP publish or read, a
    PAP topic poll) and alembic's plugin lines at each start are not written; the server's
    own INFO lines are. At DEBUG all of them are.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in CHATTY_LIBRARIES}
    try:
        for configured, heard in (("INFO", False), ("DEBUG", True)):
            stream = io.StringIO()
            configure(configured, "text", stream)
            logging.getLogger("httpx").info("HTTP Request: GET http://mr/events/t/g/c")
            logging.getLogger("alembic.runtime.plugins").info("setup plugin x")
            logging.getLogger("policy_pubsub.api").info("serving")
            written = stream.getvalue()
            assert "serving" in written
            assert ("HTTP Request" in written) is heard, written
            assert ("setup plugin" in written) is heard, written
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        for name, old in levels.items():
            logging.getLogger(name).setLevel(old)
