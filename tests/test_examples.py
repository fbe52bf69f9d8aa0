"""The example scripts, run as a user runs them: subprocesses talking to a live server.

The ``server`` fixture runs uvicorn in the test's own event loop, so the scripts are started
with ``asyncio.create_subprocess_exec`` (a blocking ``subprocess.run`` would starve it).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, load_policy
from tests.processes import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SAMPLES = ["guard.minmax.vdns", "onap.restart.tca", "onap.scaleout.tca", "onap.vfirewall.tca"]
TCA_TOPIC = "policies_DCAE_tca_tca-1"
LINE_TIMEOUT = 15.0
EXIT_TIMEOUT = 15.0
# The same component twice: with the policy_pubsub.client SDK, and with plain httpx.
SDK_COMPONENT = "component.py"
HTTPX_COMPONENT = "httpx_component.py"
COMPONENTS = [SDK_COMPONENT, HTTPX_COMPONENT]


class Script:
    """An example script running as a subprocess, its stdout read line by line."""

    def __init__(self, process: asyncio.subprocess.Process, name: str) -> None:
        self.process = process
        self.name = name
        self.lines: list[str] = []
        self.stderr = ""

    @classmethod
    async def start(cls, name: str, *args: str) -> Script:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(EXAMPLES / name),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            cwd=ROOT,
        )
        return cls(process, name)

    def explain(self, message: str) -> str:
        output = "\n".join(self.lines)
        return f"{message}\n--- {self.name} stdout:\n{output}\n--- stderr:\n{self.stderr}"

    async def expect(self, text: str, timeout: float = LINE_TIMEOUT) -> str:
        """Read lines until one contains ``text``; fail on EOF or past the deadline."""
        assert self.process.stdout is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                raw = await asyncio.wait_for(
                    self.process.stdout.readline(), max(0.0, deadline - loop.time())
                )
            except TimeoutError:
                await self.stop()
                pytest.fail(self.explain(f"no line with {text!r} within {timeout} s"))
            if not raw:
                await self.stop()
                pytest.fail(self.explain(f"{self.name} ended before printing {text!r}"))
            line = raw.decode().rstrip("\n")
            self.lines.append(line)
            if text in line:
                return line

    async def finish(self, timeout: float = EXIT_TIMEOUT) -> int:
        """Wait until it exits by itself and collect the rest of its output; its status."""
        try:
            out, err = await asyncio.wait_for(self.process.communicate(), timeout)
        except TimeoutError:
            await self.stop()
            pytest.fail(self.explain(f"{self.name} did not exit within {timeout} s"))
        self.lines.extend(out.decode().splitlines())
        self.stderr += err.decode()
        code = self.process.returncode
        assert code is not None
        return code

    async def stop(self) -> None:
        """Kill it by its pid if it still runs, and reap it (closing its pipes)."""
        if self.process.returncode is None:
            os.kill(self.process.pid, signal.SIGKILL)
        out, err = await asyncio.wait_for(self.process.communicate(), EXIT_TIMEOUT)
        self.lines.extend(out.decode().splitlines())
        self.stderr += err.decode()


async def run_script(name: str, *args: str) -> tuple[int, list[str], str]:
    """Run a script to its end: (exit status, stdout lines, stderr)."""
    script = await Script.start(name, *args)
    try:
        code = await script.finish()
    finally:
        await script.stop()
    return code, script.lines, script.stderr


async def subscribe(
    http: httpx.AsyncClient, subscriber_id: str, topic: str, filters: list[dict[str, Any]]
) -> None:
    answer = await http.post(
        f"/decision/v1/subscription/{subscriber_id}",
        json={"subscriber_topic": topic, "policy-filters": filters},
    )
    assert answer.status_code in (200, 201), answer.text


async def push(http: httpx.AsyncClient, *policies: dict[str, Any]) -> dict[str, Any]:
    answer = await http.post("/pap/v1/policies", json={"policies": list(policies)})
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def new_version(policy: dict[str, Any], version: str) -> dict[str, Any]:
    updated = json.loads(json.dumps(policy))
    updated["version"] = version
    updated["metadata"]["policy-version"] = version
    return updated


# -- pap_push.py ------------------------------------------------------------------------------


async def test_pap_push_deploys_the_samples(server: LiveServer, client: httpx.AsyncClient) -> None:
    """pap_push.py deploys the sample policies in one push, and says what it deployed and how
    many subscribers it notified; a second run deploys nothing.
    """
    await subscribe(client, "tca-1", TCA_TOPIC, [{"policy-id": "onap.*"}])
    code, lines, stderr = await run_script("pap_push.py", "--url", server.url)
    assert code == 0, stderr
    revision = (await client.get("/decision/v1/subscription/tca-1")).json()["status"]
    assert lines == [
        "deployed guard.minmax.vdns 1.0.0",
        "deployed onap.restart.tca 1.0.0",
        "deployed onap.scaleout.tca 1.0.0",
        "deployed onap.vfirewall.tca 2.0.0",
        f"revision {revision['last_revision']}: 4 deployed, 0 already deployed, "
        "1 subscriber notified",
    ]
    listed = (await client.get("/pap/v1/policies")).json()["policies"]
    assert sorted(p["policy-id"] for p in listed) == SAMPLES

    code, lines, stderr = await run_script("pap_push.py", "--url", server.url)
    assert code == 0, stderr
    assert lines == [
        f"revision {revision['last_revision']}: 0 deployed, 4 already deployed, "
        "0 subscribers notified"
    ]


async def test_pap_push_reports_an_error_answer(server: LiveServer, tmp_path: Path) -> None:
    """pap_push.py exits 1 with the server's one-sentence reason when the push is refused."""
    bad = tmp_path / "no-version.json"
    bad.write_text(json.dumps({"type": "onap.policies.Test", "name": "no.version"}))
    code, lines, stderr = await run_script("pap_push.py", "--url", server.url, str(bad))
    assert code == 1
    assert lines == []
    assert len(stderr.splitlines()) == 1, stderr
    assert "answered 400" in stderr and "policy-version" in stderr, stderr


async def test_pap_push_reports_an_unreachable_server() -> None:
    """pap_push.py exits 1 with a one-line reason when nothing listens at --url."""
    url = f"http://127.0.0.1:{free_port()}"
    code, lines, stderr = await run_script("pap_push.py", "--url", url, "--timeout", "5")
    assert code == 1
    assert lines == []
    assert len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith(f"pap_push: cannot reach {url}/pap/v1/policies"), stderr


async def test_pap_push_help() -> None:
    """pap_push.py --help names its options and the endpoint it calls."""
    code, lines, stderr = await run_script("pap_push.py", "--help")
    text = "\n".join(lines)
    assert code == 0, stderr
    assert "--url" in text and "/pap/v1/policies" in text and "FILE" in text


# -- component.py and httpx_component.py ------------------------------------------------------


@pytest.mark.parametrize("script", COMPONENTS)
async def test_component_prints_its_changes(
    server: LiveServer, client: httpx.AsyncClient, script: str
) -> None:
    """Each component example prints its starting policies, then each added, updated and
    removed policy with the revision, ignores another subscriber's snapshots on its shared
    topic, and exits by itself after --max-changes changes.
    """
    scaleout = load_policy("onap.scaleout.tca")
    restart = load_policy("onap.restart.tca")
    started = await push(client, scaleout)
    # Another component shares the topic; its snapshots must not show up in tca-1's output.
    await subscribe(client, "guard-1", TCA_TOPIC, [{"policy-type": "onap.policies.controlloop.*"}])
    component = await Script.start(
        script,
        "--url",
        server.url,
        "--max-changes",
        "3",
        "--max-backoff",
        "0.5",
        "--exit-after",
        "60",
    )
    try:
        first = await component.expect("subscribed tca-1")
        await component.expect("onap.scaleout.tca")
        added = await push(client, restart)
        await component.expect("added onap.restart.tca")
        guard = await push(client, load_policy("guard.minmax.vdns"))
        assert guard["notified"] == 1  # guard-1's snapshot is now on the shared topic
        updated = await push(client, new_version(restart, "1.0.1"))
        await component.expect("updated onap.restart.tca")
        answer = await client.delete("/pap/v1/policies/onap.scaleout.tca")
        assert answer.status_code == 200, answer.text
        removed = answer.json()
        code = await component.finish()
    finally:
        await component.stop()
    assert code == 0, component.explain("exit status")
    subscribed_at = int(first.split("at revision ")[1].split(":")[0])
    assert subscribed_at > started["revision"]
    assert component.lines == [
        f"subscribed tca-1 on topic {TCA_TOPIC} at revision {subscribed_at}: 1 policies",
        "  onap.scaleout.tca 1.0.0",
        f"revision {added['revision']}: added onap.restart.tca 1.0.0",
        f"revision {updated['revision']}: updated onap.restart.tca 1.0.0 -> 1.0.1",
        f"revision {removed['revision']}: removed onap.scaleout.tca",
        "stopping: 3 changes applied (--max-changes)",
    ], component.explain("unexpected output")
    assert component.stderr == ""


@pytest.mark.parametrize("script", COMPONENTS)
async def test_component_survives_a_server_restart(tmp_path: Path, script: str) -> None:
    """Each component example keeps going through a kill -9 and restart of the server: it
    retries, re-reads its policies, and then prints a change pushed after the restart.
    """
    async with ServerProcess(tmp_path / "store.db", tmp_path / "server.log") as server:
        timeout = httpx.Timeout(10.0)
        async with httpx.AsyncClient(base_url=server.url, timeout=timeout, trust_env=False) as http:
            await push(http, load_policy("onap.scaleout.tca"))
        component = await Script.start(
            script,
            "--url",
            server.url,
            "--max-changes",
            "1",
            "--max-backoff",
            "0.5",
            "--exit-after",
            "60",
        )
        try:
            await component.expect("subscribed tca-1")
            await component.expect("onap.scaleout.tca")
            await server.kill(signal.SIGKILL)
            if script == HTTPX_COMPONENT:  # it reports on stdout; the SDK logs on stderr
                await component.expect("poll failed")
            await server.restart()
            if script == HTTPX_COMPONENT:
                await component.expect("resync: 1 policies, no change")
            async with httpx.AsyncClient(
                base_url=server.url, timeout=timeout, trust_env=False
            ) as http:
                added = await push(http, load_policy("onap.restart.tca"))
            line = await component.expect("added onap.restart.tca")
            code = await component.finish()
        except BaseException:
            print(server.explain("server log"))
            raise
        finally:
            await component.stop()
    assert line == f"revision {added['revision']}: added onap.restart.tca 1.0.0"
    assert code == 0, component.explain("exit status")
    assert component.lines[-1] == "stopping: 1 changes applied (--max-changes)"
    if script == SDK_COMPONENT:
        assert "poll failed" in component.stderr, component.explain("no retry logged")
