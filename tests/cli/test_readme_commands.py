"""The README's "Operating it from the command line" session, replayed against a live server."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from policy_pubsub.cli.common import URL_ENV
from tests.cli.conftest import Cli
from tests.conftest import LiveServer

ROOT = Path(__file__).resolve().parents[2]
SECTION = "Operating it from the command line"


def session() -> list[tuple[str, list[str]]]:
    """Each ``$ policy-pubsub ...`` line of the section's console block, with the lines the
    README shows it printing.
    """
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## {SECTION}\n")
    block = re.search(r"```console\n(.*?)```", text[start:], flags=re.DOTALL)
    assert block is not None, f"no console block in the README's {SECTION!r} section"
    steps: list[tuple[str, list[str]]] = []
    for line in block.group(1).splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    return steps


def shown(line: str) -> re.Pattern[str]:
    """A README output line as a pattern: ``...`` stands for anything, spaces for any spaces."""
    parts = [r"\s+".join(map(re.escape, part.split())) for part in line.split("...")]
    return re.compile(".*".join(parts))


async def test_readme_session_prints_what_the_readme_shows(
    server: LiveServer, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every command of the README section, run in order from the checkout with
    POLICY_PUBSUB_URL set, exits 0 and prints the lines shown under it.
    """
    monkeypatch.setenv(URL_ENV, server.url)
    monkeypatch.chdir(ROOT)
    steps = session()
    assert [shlex.split(command)[1] for command, _ in steps] == [
        "subscribe",
        "push",
        "policies",
        "decide",
        "subscribers",
        "tail",
        "delete",
        "unsubscribe",
    ]
    for command, expected in steps:
        argv = shlex.split(command)
        assert argv[0] == "policy-pubsub"
        result = await cli(*argv[1:], url=None)
        assert result.code == 0, f"{command}\n{result.explain()}"
        printed = result.out.splitlines()
        assert len(printed) == len(expected), f"{command}\n{result.explain()}"
        for pattern, line in zip(map(shown, expected), printed, strict=True):
            assert pattern.fullmatch(line), f"{command}\nexpected {pattern.pattern}\ngot {line}"
