"""A component as a process of its own, for fault tests that kill it with SIGKILL.

``python -m tests.client.component_process URL SUBSCRIBER STATE_FILE LOG GROUP`` subscribes
to ``fl.*`` with the SDK and a state file, polls as consumer group GROUP, and appends to
``LOG`` one JSON line per thing it does, written before the next step (an ``O_APPEND`` write
survives the process's kill):

- ``{"start": {policy-id: major version}, "revision": r}``: what the SDK says the component
  holds at start-up (the state file's snapshot; nothing on a first run);
- ``{"apply": {...}, "previous": {...}, "revision": r, "event": e}``: a change it applies;
- ``{"acked": r}``: the change of revision ``r`` is recorded as applied (state file written).

:class:`ComponentProcess` starts, kills and restarts it; :func:`read_log` parses the log (a
last line cut short by a kill is ignored).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from policy_pubsub.client import PolicySubscriber, Timings
from policy_pubsub.policy_identity import policy_version

ROOT = Path(__file__).resolve().parents[2]
FILTERS = [{"policy-id": "fl.*"}]
APPLY_TIME = 0.05  # at most, per change: newer snapshots arrive while it applies
TIMINGS = Timings(
    poll_timeout=2.0,
    request_timeout=2.0,
    backoff_initial=0.02,
    backoff_max=0.2,
    resync_interval=0,
)


def majors(policies: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """policy-id -> the major number of its version (the pushes number them 1.0.0, 2.0.0...)."""
    return {
        pid: int((policy_version(dict(body)) or "0").split(".")[0])
        for pid, body in policies.items()
    }


class Log:
    """An append-only JSON-lines file; each line is one ``write`` on an ``O_APPEND`` fd."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, entry: dict[str, Any]) -> None:
        os.write(self._fd, (json.dumps(entry, sort_keys=True) + "\n").encode())


async def component(
    url: str, subscriber_id: str, state_file: str, log_path: str, group: str
) -> None:
    log = Log(log_path)
    subscriber = PolicySubscriber(
        url,
        subscriber_id=subscriber_id,
        subscriber_topic=f"topic-{subscriber_id}",
        consumer_group=group,
        policy_filters=FILTERS,
        state_file=state_file,
        timings=TIMINGS,
    )
    async with subscriber:
        log.write({"start": majors(subscriber.policies), "revision": subscriber.revision})
        async for change in subscriber.changes():
            await asyncio.sleep(random.uniform(0, APPLY_TIME))  # applying takes a moment
            log.write(
                {
                    "apply": majors(change.policies),
                    "previous": majors(change.previous),
                    "revision": change.revision,
                    "event": change.event,
                }
            )
            await subscriber.ack()
            log.write({"acked": change.revision})


def read_log(path: Path) -> list[dict[str, Any]]:
    """The log's entries; a last line cut short by a kill is left out."""
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return entries


class ComponentProcess:
    """One component subprocess at a time for one subscriber, state file and log."""

    def __init__(self, directory: Path, subscriber_id: str) -> None:
        self.subscriber_id = subscriber_id
        self.state_file = directory / f"{subscriber_id}.state.json"
        self.log = directory / f"{subscriber_id}.log"
        self.output = directory / f"{subscriber_id}.out"
        self._process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.groups = 0  # a new consumer group starts at the oldest message the router keeps

    @property
    def group(self) -> str:
        return f"{self.subscriber_id}-g{self.groups}"

    @property
    def topic(self) -> str:
        return f"topic-{self.subscriber_id}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self, url: str) -> None:
        self.starts += 1
        with self.output.open("ab") as output:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.client.component_process",
                url,
                self.subscriber_id,
                str(self.state_file),
                str(self.log),
                self.group,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )

    async def kill(self) -> None:
        """SIGKILL, and reap it."""
        if self._process is not None and self._process.returncode is None:
            os.kill(self._process.pid, signal.SIGKILL)
            await asyncio.wait_for(self._process.wait(), timeout=10)

    def entries(self) -> list[dict[str, Any]]:
        return read_log(self.log) if self.log.exists() else []

    def holds(self) -> dict[str, int]:
        """What its log says it holds now: the last start or apply."""
        for entry in reversed(self.entries()):
            if "apply" in entry:
                held: dict[str, int] = entry["apply"]
                return held
            if "start" in entry:
                started: dict[str, int] = entry["start"]
                return started
        return {}

    def exited(self) -> int | None:
        """Its exit status if it exited by itself (a crash the test should report)."""
        return None if self._process is None else self._process.returncode


if __name__ == "__main__":
    asyncio.run(component(*sys.argv[1:6]))
