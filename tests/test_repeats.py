"""Repeated warnings: the first of a kind is logged, its repeats are summarised once a window."""

from __future__ import annotations

import logging

import pytest

from policy_pubsub.repeats import RepeatedWarnings
from tests.conftest import wait_for

LOGGER = "tests.repeats"
WINDOW = 0.05


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


async def test_a_burst_is_one_line_then_one_summary(caplog: pytest.LogCaptureFixture) -> None:
    """Ten warnings of one kind write the first as it came and, a window later, one summary
    that counts the other nine; a second kind is logged on its own.
    """
    warnings = RepeatedWarnings(logging.getLogger(LOGGER), summary_seconds=WINDOW)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for n in range(10):
            warnings.warn(("10.0.0.1", "wrong password"), "failed login %d", n)
        warnings.warn(("10.0.0.2", "wrong password"), "failed login from elsewhere")
        assert lines(caplog) == ["failed login 0", "failed login from elsewhere"]
        await wait_for(lambda: len(lines(caplog)) == 3, timeout=5)
    assert lines(caplog)[2] == f"9 more like this in the last {WINDOW:.0f} s: failed login 0"


async def test_a_quiet_window_ends_the_burst(caplog: pytest.LogCaptureFixture) -> None:
    """A burst without repeats ends without a summary, and the next warning of its kind is
    logged again as a new burst.
    """
    warnings = RepeatedWarnings(logging.getLogger(LOGGER), summary_seconds=WINDOW)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        warnings.warn("k", "first")
        await wait_for(lambda: not warnings._bursts, timeout=5)
        warnings.warn("k", "second")
    assert lines(caplog) == ["first", "second"]


async def test_kinds_past_the_limit_share_one_burst(caplog: pytest.LogCaptureFixture) -> None:
    """Past ``max_kinds`` new kinds are counted together, so varied requests cannot grow the
    table or the log without bound.
    """
    warnings = RepeatedWarnings(logging.getLogger(LOGGER), summary_seconds=60, max_kinds=3)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for n in range(100):
            warnings.warn(n, "kind %d", n)
    assert lines(caplog) == ["kind 0", "kind 1", "kind 2", "kind 3"]
    assert len(warnings._bursts) == 4
