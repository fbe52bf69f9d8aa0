"""Running the server as a real subprocess, for tests that kill it, restart it, or signal it.

``ServerProcess`` starts ``python -m policy_pubsub serve`` (with this interpreter, so the same
virtualenv) on a free loopback port and a given SQLite file, waits until ``/healthcheck``
answers, and can kill it with any signal by its pid, stop it with SIGTERM, or start it again
on the same port and database. Its output goes to a log file; failures quote the log's tail.
Used as ``async with ServerProcess(...) as server:`` it is always stopped on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx
import pytest

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
KILL_TIMEOUT = 10.0
POLL_EVERY = 0.02
ROOT = Path(__file__).resolve().parents[1]  # so ``-m policy_pubsub`` is this checkout's


def free_port() -> int:
    """A loopback port nobody listens on right now (bind port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """One ``policy-pubsub serve`` subprocess at a time, on a fixed port and database."""

    def __init__(
        self,
        database: Path | str,
        log: Path,
        *,
        port: int | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.database = database
        self.log = log
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._args = list(args)
        self._env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self._process: asyncio.subprocess.Process | None = None
        self.starts = 0

    @property
    def database_url(self) -> str:
        """A SQLite file path, or a database URL given as a string (e.g. PostgreSQL)."""
        if isinstance(self.database, str):
            return self.database
        return f"sqlite+aiosqlite:///{self.database}"

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        if self._process is None:
            pytest.fail("the server process was never started")
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once it has exited (negative: killed by that signal), else None."""
        return None if self._process is None else self._process.returncode

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the server and return once ``/healthcheck`` answers 200."""
        if self.running:
            pytest.fail(f"the server is already running as pid {self.pid}")
        command = [
            sys.executable,
            "-m",
            "policy_pubsub",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--database-url",
            self.database_url,
            *self._args,
        ]
        self.starts += 1
        with self.log.open("ab") as log:
            log.write(f"--- start {self.starts}: {' '.join(command)}\n".encode())
            log.flush()
            self._process = await asyncio.create_subprocess_exec(
                *command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                cwd=ROOT,
            )
        await self._wait_healthy(timeout)

    async def _wait_healthy(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        why = "no answer yet"
        async with httpx.AsyncClient(base_url=self.url, timeout=2.0, trust_env=False) as http:
            while True:
                code = self.returncode
                if code is not None:
                    pytest.fail(self.explain(f"the server exited with {code} during start-up"))
                try:
                    answer = await http.get("/healthcheck")
                except httpx.TransportError as exc:
                    why = f"{type(exc).__name__}: {exc}"
                else:
                    if answer.status_code == 200:
                        return
                    why = f"{answer.status_code} {answer.text[:200]}"
                if loop.time() > deadline:
                    await self.close()
                    pytest.fail(
                        self.explain(f"the server was not healthy within {timeout} s ({why})")
                    )
                await asyncio.sleep(POLL_EVERY)

    def send(self, sig: int) -> None:
        """Send a signal to the server's pid."""
        os.kill(self.pid, sig)

    async def wait(self, timeout: float) -> int | None:
        """Wait for the process to exit; its exit status, or None if it still runs."""
        if self._process is None:
            return None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._process.wait(), timeout)
        return self.returncode

    async def kill(self, sig: int = signal.SIGKILL, timeout: float = KILL_TIMEOUT) -> int:
        """Kill the server with ``sig`` (SIGKILL by default) and wait until it is gone."""
        self.send(sig)
        code = await self.wait(timeout)
        if code is None:
            await self.close()
            pytest.fail(self.explain(f"the server survived signal {sig} for {timeout} s"))
        return code

    async def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then wait for the exit; SIGKILL as a last resort (and fail) past the
        deadline. Returns the exit status (0 when it was not running).
        """
        if not self.running:
            return self.returncode or 0
        self.send(signal.SIGTERM)
        code = await self.wait(timeout)
        if code is None:
            await self.close()
            pytest.fail(self.explain(f"the server did not exit within {timeout} s of SIGTERM"))
        return code

    async def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Start again on the same port and database (after it exited or was killed)."""
        if self.running:
            pytest.fail(f"restart while the server still runs as pid {self.pid}")
        await self.start(timeout)

    async def stop(self) -> None:
        """Stop it for good, whatever state it is in: SIGTERM, then SIGKILL past the deadline.
        Never fails, so it is safe in a ``finally``.
        """
        try:
            if self.running:
                self.send(signal.SIGTERM)
                await self.wait(STOP_TIMEOUT)
        finally:
            await self.close()

    async def close(self) -> None:
        """Make sure the process is gone: SIGKILL if it still runs, and reap it."""
        if self.running:
            self.send(signal.SIGKILL)
            await self.wait(KILL_TIMEOUT)

    # -- diagnostics ----------------------------------------------------------------------

    def tail(self, lines: int = 40) -> str:
        """The last lines of the server's log."""
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def explain(self, message: str) -> str:
        """A failure message with the server log's tail."""
        return f"{message}\n--- server log ({self.log}), last lines:\n{self.tail()}"

    # -- context manager ------------------------------------------------------------------

    async def __aenter__(self) -> ServerProcess:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()
