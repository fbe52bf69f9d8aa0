"""kill -9 of the server at random moments, in a loop, while a PAP pushes new versions of one
policy and a component applies them through the SDK; checked against a model of what was
acknowledged and what the component applied, in order.

The model: every acknowledged version is durable, so the component ends holding the newest
version that was acknowledged (or a newer one whose push committed but whose answer was lost
with the server); the versions it applies never go back; it applies no version nobody pushed.
"""

from __future__ import annotations

import asyncio
import random
import signal
from pathlib import Path

import httpx
import pytest

from policy_pubsub.policy_identity import policy_version
from tests.api.helpers import tosca
from tests.client.conftest import subscriber
from tests.conftest import wait_for
from tests.processes import ServerProcess

CYCLES = 4
POLICY = "onap.p"


@pytest.mark.slow
async def test_a_component_never_goes_back_and_ends_current_across_server_kills(
    tmp_path: Path,
) -> None:
    rng = random.Random(20261203)
    acknowledged: list[int] = []
    attempted = 0
    applied: list[int] = []
    pushing = True

    async with (
        ServerProcess(tmp_path / "store.db", tmp_path / "server.log") as server,
        httpx.AsyncClient(base_url=server.url, timeout=5, trust_env=False) as http,
    ):

        async def pusher() -> None:
            nonlocal attempted
            while pushing:
                attempted += 1
                version = attempted
                body = {"policies": [tosca(POLICY, version=f"{version}.0.0")]}
                try:
                    answer = await http.post("/pap/v1/policies", json=body)
                except httpx.TransportError:
                    await asyncio.sleep(0.02)  # the server is down: not acknowledged
                    continue
                if answer.status_code == 200:
                    acknowledged.append(version)
                await asyncio.sleep(rng.uniform(0, 0.02))

        async def component() -> None:
            async with subscriber(server.url) as sub:
                async for change in sub.changes():
                    found = change.policies.get(POLICY)
                    if found is not None:
                        applied.append(int((policy_version(found) or "0").split(".")[0]))

        pushes = asyncio.create_task(pusher())
        applying = asyncio.create_task(component())
        try:
            for cycle in range(CYCLES):
                await asyncio.sleep(rng.uniform(0.05, 0.4))
                await server.kill(signal.SIGKILL)
                await asyncio.sleep(rng.uniform(0, 0.2))
                await server.restart()
                await wait_for(lambda n=cycle: len(acknowledged) > n, timeout=15)
            await asyncio.sleep(0.2)
            pushing = False
            await pushes
            newest = max(acknowledged)
            await wait_for(lambda: bool(applied) and applied[-1] >= newest, timeout=30)
        except BaseException:
            print(server.explain("server log"))
            raise
        finally:
            pushing = False
            applying.cancel()
            await asyncio.gather(pushes, applying, return_exceptions=True)

    assert applied == sorted(applied), f"the component went back: {applied}"
    assert applied[-1] <= attempted, "it applied a version nobody pushed"
    assert set(acknowledged) <= set(range(1, attempted + 1))
    assert applied[-1] >= max(acknowledged)
