"""Fixtures of the command-line tests: the CLI run in-process against a live server.

The ``server`` fixture runs uvicorn in the test's own event loop, so ``policy_pubsub.cli.main``
runs in a worker thread (``asyncio.to_thread``) and its output is taken from ``capsys``.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from policy_pubsub.cli import main
from policy_pubsub.cli.common import URL_ENV
from policy_pubsub.config import Settings
from tests.conftest import LiveServer, make_settings


@dataclass(frozen=True)
class Outcome:
    """One run of the command: its exit status and what it printed."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        """stdout as one JSON document."""
        return json.loads(self.out)

    def json_lines(self) -> list[Any]:
        """stdout as one JSON document per line."""
        return [json.loads(line) for line in self.out.splitlines()]

    def explain(self) -> str:
        return f"exit {self.code}\n--- stdout:\n{self.out}\n--- stderr:\n{self.err}"


def run_main(argv: list[str]) -> int:
    """``main(argv)`` as the console script runs it: SystemExit becomes the exit status."""
    try:
        return main(argv)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        return 1


Cli = Callable[..., Awaitable[Outcome]]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """One store is enough: the command line is a client of the HTTP API."""
    return make_settings(tmp_path)


@pytest.fixture(autouse=True)
def no_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A POLICY_PUBSUB_URL of the developer's shell must not steer the tests."""
    monkeypatch.delenv(URL_ENV, raising=False)


@pytest.fixture
def cli(server: LiveServer, capsys: pytest.CaptureFixture[str]) -> Cli:
    """Run ``policy-pubsub ARGS... --url <the test server>`` in-process; its Outcome."""

    async def run(*args: str, url: str | None = server.url) -> Outcome:
        argv = [*args, "--url", url] if url is not None else list(args)
        capsys.readouterr()
        code = await asyncio.to_thread(run_main, argv)
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return run


@pytest.fixture
def unreachable_url() -> str:
    """A loopback URL where nothing listens (a port bound, read and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


TCA_TYPE = "onap.policies.monitoring.tcagen2"


def policy(policy_id: str, version: str = "1.0.0", policy_type: str = TCA_TYPE) -> dict[str, Any]:
    """A small ToscaPolicy with the given identity."""
    return {
        "type": policy_type,
        "type_version": "1.0.0",
        "properties": {"threshold": 1},
        "name": policy_id,
        "version": version,
        "metadata": {"policy-id": policy_id, "policy-version": version},
    }
