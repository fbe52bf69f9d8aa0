"""A component on the SDK, killed -9 in the middle of applying a change, with the server on the
RabbitMQ router: after its restart it applies that change again, and every change is applied
to the end exactly once, in order; whether the SDK long-polls the server over HTTP or consumes
its queue on RabbitMQ.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from tests.api.helpers import tosca
from tests.conftest import make_settings, start_server, stop_server, wait_for
from tests.processes import ROOT
from tests.rabbitmq import AMQP_URL, delete_on_broker, skip_without_rabbitmq, unique_exchange

# The component: applies each added or updated policy, writing "start" and "done" lines to a
# ledger (synced), and, while the hold file exists, stops between them for the test's kill.
COMPONENT = textwrap.dedent(
    """
    import os, sys, time
    from policy_pubsub.client import PolicySubscriber, Timings

    url, subscriber, state, ledger, hold, router_url, exchange = sys.argv[1:8]

    def note(line):
        with open(ledger, "a") as out:
            out.write(line + "\\n")
            out.flush()
            os.fsync(out.fileno())

    def apply(change):
        for policy in [*change.added.values(), *change.updated.values()]:
            tag = policy["metadata"]["policy-id"] + "@" + policy["metadata"]["policy-version"]
            note("start " + tag)
            while os.path.exists(hold):
                time.sleep(0.01)
            note("done " + tag)

    PolicySubscriber(
        url,
        subscriber_id=subscriber,
        subscriber_topic="t.component",
        policy_filters=[{"policy-id": "onap.*"}],
        state_file=state,
        timings=Timings(backoff_initial=0.01, backoff_max=0.05, poll_timeout=5.0),
        router_url=router_url or None,
        amqp_exchange=exchange,
    ).run(apply)
    """
)


class Component:
    """The component program as a subprocess, killed by its pid."""

    def __init__(
        self, tmp_path: Path, url: str, subscriber: str, router_url: str, exchange: str
    ) -> None:
        self.script = tmp_path / "component.py"
        self.script.write_text(COMPONENT)
        self.ledger = tmp_path / "ledger.txt"
        self.hold = tmp_path / "hold"
        self._args = [str(self.script), url, subscriber, str(tmp_path / "state.json")]
        self._args += [str(self.ledger), str(self.hold), router_url, exchange]
        self._log = tmp_path / "component.log"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self._log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, *self._args, stdout=log, stderr=log, cwd=ROOT
            )

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            os.kill(self.process.pid, signal.SIGKILL)
            await asyncio.wait_for(self.process.wait(), 10)

    def lines(self) -> list[str]:
        return self.ledger.read_text().splitlines() if self.ledger.exists() else []

    def noted(self, line: str) -> bool:
        return line in self.lines()


@pytest.mark.parametrize("via", ["http", "amqp"])
async def test_a_change_interrupted_by_kill_9_is_applied_again_and_each_once(
    tmp_path: Path, via: str
) -> None:
    """Versions 1 to 3 of a policy, the component killed -9 while applying version 2: the
    ledger shows version 2 started twice and every version done exactly once, in order.
    """
    await skip_without_rabbitmq()
    exchange, subscriber = unique_exchange(), f"sub-comp-{random.getrandbits(32):x}"
    settings = make_settings(tmp_path, router_url=AMQP_URL, amqp_exchange=exchange)
    live, task = await start_server(settings)
    router_url = AMQP_URL if via == "amqp" else ""
    component = Component(tmp_path, live.url, subscriber, router_url, exchange)
    try:
        async with httpx.AsyncClient(base_url=live.url, timeout=10) as http:

            async def push(version: int) -> None:
                body = {"policies": [tosca("onap.k", version=f"{version}.0.0")]}
                r = await http.post("/pap/v1/policies", json=body)
                assert r.status_code == 200, r.text

            async def subscribed() -> bool:
                r = await http.get(f"/decision/v1/subscription/{subscriber}")
                return r.status_code == 200

            await component.start()
            await wait_for(subscribed, timeout=20)
            await push(1)
            await wait_for(lambda: component.noted("done onap.k@1.0.0"), timeout=15)
            component.hold.touch()
            await push(2)
            await wait_for(lambda: component.noted("start onap.k@2.0.0"), timeout=15)
            await component.kill()
            component.hold.unlink()
            await component.start()
            await wait_for(lambda: component.noted("done onap.k@2.0.0"), timeout=20)
            await push(3)
            await wait_for(lambda: component.noted("done onap.k@3.0.0"), timeout=15)
    finally:
        await component.kill()
        await stop_server(live, task)
        await delete_on_broker(exchange, [subscriber])
    lines = component.lines()
    assert [line for line in lines if line.startswith("done")] == [
        "done onap.k@1.0.0",
        "done onap.k@2.0.0",
        "done onap.k@3.0.0",
    ]
    assert lines.count("start onap.k@2.0.0") == 2
