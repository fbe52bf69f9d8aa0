"""Logs: one request line per HTTP request, after the answer, with its fields; and the JSON
format, one JSON object per line, from ``serve --log-format json``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import httpx
import pytest

from policy_pubsub import constants
from policy_pubsub.logs import ACCESS_LOGGER, NO_ANSWER, JsonFormatter
from policy_pubsub.testing import start_server, stop_server
from tests.conftest import make_settings, wait_for
from tests.processes import ServerProcess

FIELDS = {"method", "path", "status", "duration_ms", "request_id", "client"}


def _request_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == ACCESS_LOGGER]


async def test_each_request_logs_one_line_with_its_fields(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each request logs exactly one line, at INFO, with method, path, status, duration,
    the X-ONAP-RequestID and the client address; in JSON each is a key of the object.
    """
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
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
    assert first.levelno == logging.INFO
    assert first.__dict__["request_id"] == "rid-1"
    assert second.__dict__["request_id"] == missing.headers[constants.REQUEST_ID_HEADER]
    document = json.loads(JsonFormatter().format(first))
    assert set(document) >= FIELDS
    assert document["method"] == "GET" and document["duration_ms"] >= 0
    assert document["client"].startswith("127.0.0.1:")
    assert document["logger"] == ACCESS_LOGGER and "rid-1" in document["message"]


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
            router = live.app.state.router
            await wait_for(lambda: router.held_reads == 1)
            poll.cancel()
            await asyncio.gather(poll, return_exceptions=True)
        await wait_for(
            lambda: any(r.__dict__["status"] == NO_ANSWER for r in _request_lines(caplog))
        )
    finally:
        await stop_server(live, task)


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
        r = await http.get("/pap/v1/policies", headers={constants.REQUEST_ID_HEADER: "json-1"})
        assert r.status_code == 200

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
        "/pap/v1/policies",
        200,
    )
    assert not [d for d in documents if d["logger"] == "uvicorn.access"]
