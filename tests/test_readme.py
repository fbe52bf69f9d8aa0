"""The README's commands, run as a newcomer would run them."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveServer, wait_for

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DEFAULT_URL = "http://127.0.0.1:6969"


def _blocks(section: str | None = None) -> list[str]:
    """The ```sh blocks of the README, or of one ``## section`` of it."""
    text = README
    if section is not None:
        start = text.index(f"## {section}\n")
        end = text.find("\n## ", start + 1)
        text = text[start : end if end != -1 else None]
    return re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL)


async def _run(command: str, **env: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "bash", "-euo", "pipefail", "-c", command,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
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
        "PDP_STATUS", "SUCCESS",
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


@pytest.mark.slow
def test_install_and_serve_command_works_in_a_fresh_copy(tmp_path: Path) -> None:
    """The README's first command installs the package from a clean copy of the tree into a
    new virtualenv and starts a server that answers its health check.
    """
    command = _blocks()[0].strip()
    copy = tmp_path / "checkout"
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
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


