"""The README's commands, run as a newcomer would run them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from policy_pubsub.testing import start_server, stop_server
from tests.conftest import LiveServer, load_policy, make_settings, wait_for
from tests.test_sdk_distribution import SERVER_PROJECT, requirement_name

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DEFAULT_URL = "http://127.0.0.1:6969"


def _blocks(section: str | None = None, language: str = "sh") -> list[str]:
    """The ```sh (or other ``language``) blocks of the README, or of one ``## section``."""
    text = README
    if section is not None:
        start = text.index(f"## {section}\n")
        end = text.find("\n## ", start + 1)
        text = text[start : end if end != -1 else None]
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


async def _run(command: str, *, cwd: Path = ROOT, timeout: float = 60, **env: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-euo",
        "pipefail",
        "-c",
        command,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=timeout)
    assert process.returncode == 0, f"{command}\nexit {process.returncode}: {err.decode()}"
    return out.decode()


def _docs(output: str) -> list[object]:
    """Each line of curl output that is JSON, parsed (curl -s prints one answer per call)."""
    decoder = json.JSONDecoder()
    found: list[object] = []
    text = output.strip()
    while text:
        value, end = decoder.raw_decode(text)
        found.append(value)
        text = text[end:].strip()
    return found


@pytest.mark.skipif(shutil.which("curl") is None, reason="the walkthrough uses curl")
async def test_walkthrough_works_as_written(server: LiveServer) -> None:
    """Each walkthrough command, pasted against a running server, does what the text says."""
    blocks = [b.replace(DEFAULT_URL, server.url) for b in _blocks("Walkthrough")]
    assert len(blocks) == 6
    subscribe, push, poll, delete_and_poll, pdp_update, decide = blocks

    [answer] = _docs(await _run(subscribe))
    assert isinstance(answer, dict)
    assert (answer["subscriber_id"], answer["policies"]) == ("tca-1", {})

    [answer] = _docs(await _run(push))
    assert isinstance(answer, dict)
    assert answer["notified"] == 1

    [messages] = _docs(await _run(poll))
    assert isinstance(messages, list)
    snapshots = [json.loads(m) for m in messages]
    assert [s["event"] for s in snapshots] == ["subscribe", "update"]
    assert list(snapshots[1]["policies"]) == ["onap.restart.tca"]

    undeployed, later = _docs(await _run(delete_and_poll))
    assert isinstance(undeployed, dict) and isinstance(later, list)
    assert [u["policy-id"] for u in undeployed["undeployed"]] == ["onap.restart.tca"]
    assert [json.loads(m)["policies"] for m in later] == [{}]

    [status] = _docs(await _run(pdp_update))
    assert isinstance(status, dict)
    assert (status["messageName"], status["response"]["responseStatus"]) == (
        "PDP_STATUS",
        "SUCCESS",
    )

    [decision] = _docs(await _run(decide))
    assert decision == {
        "policies": {
            "onap.restart.tca": {
                "type": "onap.policies.monitoring.tcagen2",
                "metadata": {"policy-id": "onap.restart.tca", "policy-version": "1.0.1"},
            }
        }
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _fresh_copy(copy: Path) -> Path:
    """The files of this checkout that git tracks or would track, copied to ``copy``."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    return copy


@pytest.mark.slow
@pytest.mark.timeout(300)  # a fresh virtualenv and pip install, then _until_healthy's 240 s
def test_install_and_serve_command_works_in_a_fresh_copy(tmp_path: Path) -> None:
    """The README's first command installs the package from a clean copy of the tree into a
    new virtualenv and starts a server that answers its health check, on uvloop and httptools.
    """
    command = _blocks()[0].strip()
    copy = _fresh_copy(tmp_path / "checkout")
    port = _free_port()
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        ["bash", "-c", command],
        cwd=copy,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "POLICY_PUBSUB_PORT": str(port), "VIRTUAL_ENV": ""},
        start_new_session=True,
    )
    try:
        asyncio.run(_until_healthy(f"http://127.0.0.1:{port}", process))
        assert (copy / "policy-pubsub.db").exists()
        # Stop the server with SIGTERM, as a service manager would. bash may have handed its
        # process over to the last command of the chain (exec), or still be its parent.
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        for pid in [int(child) for child in children] or [process.pid]:
            os.kill(pid, signal.SIGTERM)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        log.close()
    output = (tmp_path / "serve.log").read_text()
    assert process.returncode == 0, output[-2000:]
    assert "store closed" in output
    assert "event loop uvloop, HTTP parser httptools" in output, output[-2000:]


async def _until_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(timeout=2) as client:

        async def healthy() -> bool:
            if process.poll() is not None:
                pytest.fail(f"the README command exited with {process.returncode}")
            try:
                return (await client.get(f"{url}/healthcheck")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_for(healthy, timeout=240, every=0.2)


async def test_sdk_snippet_works_as_written(server: LiveServer, tmp_path: Path) -> None:
    """The README's SDK example, run as a script, prints each change a push and a delete
    make, and after a restart reports only what changed while it was down.
    """
    [snippet] = _blocks("For component authors: the SDK", "python")
    script = tmp_path / "component.py"
    script.write_text(snippet.replace(DEFAULT_URL, server.url))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        restart = load_policy("onap.restart.tca")
        scaleout = load_policy("onap.scaleout.tca")
        async with _running(script) as lines:
            await http.post("/pap/v1/policies", json={"policies": [restart]})
            assert await _next(lines) == f"{await _revision(http)} ['onap.restart.tca'] [] []"
        await http.post("/pap/v1/policies", json={"policies": [scaleout]})
        await http.delete("/pap/v1/policies/onap.restart.tca")
        down_at = await _revision(http)
        async with _running(script) as lines:
            revision, _, rest = (await _next(lines)).partition(" ")
            # The restart re-subscribes, which takes a revision of its own.
            assert int(revision) > down_at
            assert rest == "['onap.scaleout.tca'] [] ['onap.restart.tca']"


async def _revision(http: httpx.AsyncClient) -> int:
    status = (await http.get("/decision/v1/subscription/tca-1")).json()["status"]
    revision: int = status["last_revision"]
    return revision


@contextlib.asynccontextmanager
async def _running(script: Path) -> AsyncIterator[asyncio.StreamReader]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        cwd=script.parent,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    try:
        yield process.stdout
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=15)


async def _next(lines: asyncio.StreamReader) -> str:
    line = await asyncio.wait_for(lines.readline(), timeout=20)
    return line.decode().strip()


SDK_CHECK = """
import asyncio, sys
from policy_pubsub.client import PolicySubscriber, Timings

async def main() -> None:
    async with PolicySubscriber(
        sys.argv[1], subscriber_id="sdk-1", subscriber_topic="sdk-1",
        policy_filters=[{"policy-id": "p"}], timings=Timings(give_up_after=30),
    ) as subscriber:
        print(subscriber.revision)
    try:
        import policy_pubsub.service
    except ImportError:
        print("no server")

asyncio.run(main())
"""


@pytest.mark.slow
@pytest.mark.timeout(360)
@pytest.mark.parametrize("settings", ["sqlite"], indirect=True)
async def test_sdk_install_command_brings_the_sdk_alone(server: LiveServer, tmp_path: Path) -> None:
    """The README's SDK install command, run in a clean copy of the tree, makes an
    environment with the SDK and none of the server's dependencies or modules, whose
    subscriber subscribes to a live server.
    """
    [command] = _blocks("For component authors: the SDK")
    copy = _fresh_copy(tmp_path / "checkout")
    await _run(command, cwd=copy, timeout=300, VIRTUAL_ENV="")
    [python] = copy.glob(".venv*/bin/python")

    listed = json.loads(await _run(shlex.join([str(python), "-m", "pip", "list", "--format=json"])))
    installed = {requirement_name(item["name"]) for item in listed}
    server_only = {requirement_name(r) for r in SERVER_PROJECT["project"]["dependencies"]}
    assert "policy-pubsub-client" in installed
    assert installed & (server_only - {"httpx"}) == set()

    script = tmp_path / "component.py"
    script.write_text(SDK_CHECK)
    output = await _run(shlex.join([str(python), str(script), server.url]))
    revision, verdict = output.splitlines()[-2:]
    assert int(revision) >= 1
    assert verdict == "no server"


@pytest.mark.skipif(
    shutil.which("curl") is None or shutil.which("openssl") is None,
    reason="the signature example uses curl and openssl",
)
async def test_signature_example_works_as_written(tmp_path: Path) -> None:
    """The Security section's shell example, run against a server with a webhook secret,
    deploys its policy; run again unchanged (a new time and nonce) it passes again, and the
    very request it sent, sent once more, is refused.
    """
    [block] = _blocks("Security")
    secret = "a shared secret"
    settings = make_settings(tmp_path, pap_webhook_secret=SecretStr(secret))
    live, task = await start_server(settings)
    try:
        command = block.replace("https://pp.example:6969", live.url)
        command = command.replace("curl -s", "curl -s -w '\\n%{http_code}'")
        for _ in range(2):
            answer, status = (await _run(command, cwd=tmp_path, SECRET=secret)).rsplit("\n", 1)
            assert status == "200", answer
            assert [d["policy-id"] for d in json.loads(answer)["deployed"]] in (["p1"], [])
        # The same request again, with the header the example computed: a replay.
        replay = command.replace("curl -s", 'echo "$t $nonce $sig" > sent.txt; curl -s', 1)
        await _run(replay, cwd=tmp_path, SECRET=secret)
        t, nonce, sig = (tmp_path / "sent.txt").read_text().split()
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
            body = re.search(r"BODY='(.*)'", block)
            assert body is not None
            again = await http.post(
                "/pap/v1/policies",
                content=body.group(1).encode(),
                headers={
                    "Content-Type": "application/json",
                    "X-Policy-Pubsub-Signature": f"t={t},nonce={nonce},v1={sig}",
                },
            )
            assert again.status_code == 401, again.text
    finally:
        await stop_server(live, task)


async def test_amqp_consumer_snippet_works_as_written(tmp_path: Path) -> None:
    """The README's plain aio-pika consumer, run as a script against a server on RabbitMQ,
    prints the subscription's starting snapshot and then the snapshot a push makes.
    """
    from tests.rabbitmq import AMQP_URL, delete_on_broker, skip_without_rabbitmq, unique_exchange

    await skip_without_rabbitmq()
    [snippet] = _blocks("AMQP (RabbitMQ)", "python")
    exchange, subscriber = unique_exchange(), f"readme-{os.getpid()}-{id(tmp_path):x}"
    script = tmp_path / "consumer.py"
    script.write_text(
        snippet.replace('"tca-1"', f'"{subscriber}"').replace(
            "amqp://guest:guest@127.0.0.1:5672/", AMQP_URL
        )
    )
    settings = make_settings(tmp_path, router_url=AMQP_URL, amqp_exchange=exchange)
    live, task = await start_server(settings)
    try:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
            r = await http.post(
                f"/decision/v1/subscription/{subscriber}",
                json={
                    "subscriber_topic": "readme.amqp",
                    "policy-filters": [{"policy-id": "onap.*"}],
                },
            )
            assert r.status_code == 201, r.text
            status = (await http.get(f"/decision/v1/subscription/{subscriber}")).json()["status"]
            subscribed = status["last_revision"]

            async def delivered() -> bool:
                return (
                    int((await http.get("/healthcheck")).json()["details"]["outbox"]["depth"]) == 0
                )

            await wait_for(delivered, timeout=15)
            async with _running(script) as lines:
                assert await _next(lines) == f"{subscribed} []"
                r = await http.post(
                    "/pap/v1/policies", json={"policies": [load_policy("onap.restart.tca")]}
                )
                pushed = r.json()["revision"]
                assert await _next(lines) == f"{pushed} ['onap.restart.tca']"
    finally:
        await stop_server(live, task)
        await delete_on_broker(exchange, [subscriber])
