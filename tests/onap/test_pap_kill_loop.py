"""kill -9 of the PDP at random moments, in a loop, while ONAP's PAP drives it over the
POLICY-PDP-PAP topic of an external DMaaP MR; checked against a model of what the PAP was told.

The PAP sends one PDP_UPDATE at a time: step k deploys ``kill.loop.k`` and undeploys
``kill.loop.(k-1)``, so after step k exactly ``{kill.loop.k}`` is deployed. An update that
gets no answer in time is sent again, as ONAP's PAP retries, until it is answered. The model:

- every answer is SUCCESS and lists exactly the model's set of its step;
- an answered step is durable: after each restart, before the PAP sends anything more, the
  PDP holds the set of the last answered step, or of the step after it (committed, but its
  answer was lost with the process);
- the PDP registers again after each restart, under the same name.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import httpx
import pytest

from tests.api.helpers import tosca
from tests.conftest import make_settings, start_server, stop_server, wait_for
from tests.onap.pap_simulator import PapSimulator, Status, running_pap, update
from tests.processes import ServerProcess

NAME = "pdp-kill-loop"
GROUP = "defaultGroup"
SUBGROUP = "policy-pubsub"
CYCLES = 3
RETRY_SECONDS = 2.0


def policy(step: int) -> str:
    return f"kill.loop.{step}"


def expected(step: int) -> set[str]:
    """What the PDP holds once step ``step`` is applied (nothing before step 1)."""
    return {policy(step)} if step > 0 else set()


def step_update(step: int) -> Status:
    undeploy = [{"name": policy(step - 1), "version": "1.0.0"}] if step > 1 else []
    return update(NAME, GROUP, SUBGROUP, deploy=[tosca(policy(step))], undeploy=undeploy)


async def answer_of(pap: PapSimulator, message: Status, *, after: int) -> Status | None:
    """The PDP_STATUS answering ``message`` (from status ``after`` on), None if none came in
    ``RETRY_SECONDS``.
    """
    request_id = message["requestId"]
    try:
        return await pap.wait_status(
            lambda s: (s.get("response") or {}).get("responseTo") == request_id,
            after=after,
            timeout=RETRY_SECONDS,
        )
    except TimeoutError:
        return None


async def deployed(pdp: ServerProcess) -> set[str]:
    async with httpx.AsyncClient(base_url=pdp.url, timeout=5, trust_env=False) as http:
        r = await http.get("/pap/v1/policies")
    r.raise_for_status()
    return {p["policy-id"] for p in r.json()["policies"]}


class Pap:
    """The PAP's side: each step sent until answered, then the next; ``answered`` is the
    last step it had an answer for.
    """

    def __init__(self, simulator: PapSimulator) -> None:
        self.simulator = simulator
        self.answered = 0
        self.last: int | None = None  # the step to stop after, if any
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._drive())

    async def pause(self) -> None:
        """Stop sending (its PDP is away); a failed check of the model fails the test here."""
        task, self._task = self._task, None
        assert task is not None
        task.cancel()
        (outcome,) = await asyncio.gather(task, return_exceptions=True)
        if not isinstance(outcome, asyncio.CancelledError):
            raise AssertionError("the PAP stopped on its own") from outcome

    async def past(self, step: int, timeout: float = 30) -> None:
        """Wait until a step after ``step`` is answered."""

        def done() -> bool:
            if self._task is not None and self._task.done():
                self._task.result()  # raises what stopped it
            return self.answered > step

        await wait_for(done, timeout=timeout)

    async def finish(self, steps: int) -> None:
        """Answer ``steps`` more steps and stop."""
        assert self._task is not None
        self.last = self.answered + steps
        await asyncio.wait_for(self._task, timeout=30)

    async def _drive(self) -> None:
        pap = self.simulator
        while self.answered != self.last:
            message = step_update(self.answered + 1)
            seen = len(pap.statuses)
            status = None
            while status is None:
                await pap.send(message)
                status = await answer_of(pap, message, after=seen)
            assert status["response"]["responseStatus"] == "SUCCESS", status
            assert status["name"] == NAME
            assert {p["name"] for p in status["policies"]} == expected(self.answered + 1)
            self.answered += 1


@pytest.mark.slow
async def test_answered_updates_survive_pdp_kills(tmp_path: Path) -> None:
    rng = random.Random(20261203)
    (tmp_path / "mr").mkdir()
    mr, mr_task = await start_server(make_settings(tmp_path / "mr"))
    args = ["--pap-topic", f"dmaap+{mr.url}/POLICY-PDP-PAP"]
    args += ["--pdp-name", NAME, "--pdp-group", GROUP]
    env = {"POLICY_PUBSUB_PAP_POLL_TIMEOUT_MS": "500", "POLICY_PUBSUB_PDP_HEARTBEAT_MS": "60000"}
    try:
        async with (
            ServerProcess(tmp_path / "pdp.db", tmp_path / "pdp.log", args=args, env=env) as pdp,
            running_pap(mr.url) as simulator,
        ):
            await simulator.registration(group=GROUP)
            pap = Pap(simulator)
            pap.start()
            for _ in range(CYCLES):
                # Kill at a random moment of a step, once the PAP has moved on.
                await pap.past(pap.answered)
                await asyncio.sleep(rng.uniform(0, 0.3))
                await pdp.kill()
                await pap.pause()
                mark = len(simulator.statuses)
                await pdp.start()
                # Durable: the last answered step, or the one after it whose answer died.
                held = await deployed(pdp)
                assert held in (expected(pap.answered), expected(pap.answered + 1)), (
                    f"after step {pap.answered} the PDP holds {sorted(held)}"
                )
                again = await simulator.wait_status(
                    lambda s: s.get("name") == NAME and "response" not in s, after=mark
                )
                assert again["state"] == "PASSIVE"
                pap.start()
            await pap.finish(2)
            assert await deployed(pdp) == expected(pap.answered)
            assert pdp.starts == CYCLES + 1
    finally:
        await stop_server(mr, mr_task)
