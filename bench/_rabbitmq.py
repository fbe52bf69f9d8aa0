"""A private RabbitMQ node for one benchmark run, so that thousands of quorum queues neither
meet the shared broker's open-file limit nor disturb what others run against it.

The node has its own name, AMQP port and distribution port (free ports on loopback), its own
database and logs in a temporary directory, its own Erlang cookie (``HOME`` is that
directory), no plugins, no config file, and an open-file limit raised to the hard limit (at
most ``NOFILE``). It is stopped by its pid (SIGTERM, then SIGKILL) and its directory deleted
when the ``with`` block ends, however it ends. The shared broker on 5672 is never touched.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from _common import free_port

NOFILE = 65536
SERVER = os.environ.get("RABBITMQ_SERVER_SCRIPT", "/usr/lib/rabbitmq/bin/rabbitmq-server")
START_TIMEOUT = 120.0


class PrivateRabbitMQUnavailable(RuntimeError):
    """A private node cannot be started here; the text says why."""


def _nofile() -> int:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return NOFILE if hard == resource.RLIM_INFINITY else min(NOFILE, hard)


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5) as s:
        s.sendall(b"AMQP\x00\x00\x09\x01")
        s.settimeout(2)
        return s.recv(1) == b"\x01"  # a Connection.Start frame: the broker is booted
    return False


def _stop(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def private_rabbitmq(log: Path | None = None) -> Iterator[str]:
    """Start a node, yield its AMQP URL (guest/guest on loopback), stop it and delete it."""
    if not os.access(SERVER, os.X_OK):
        raise PrivateRabbitMQUnavailable(f"{SERVER} is not an executable RabbitMQ server script")
    home = Path(tempfile.mkdtemp(prefix="pps-rabbitmq-"))
    port, dist = free_port(), free_port()
    name = f"pps-bench-{port}@localhost"
    (home / "enabled_plugins").write_text("[].\n")
    env = {
        **os.environ,
        "HOME": str(home),
        "RABBITMQ_NODENAME": name,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist),
        "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
        "RABBITMQ_LOG_BASE": str(home / "log"),
        "RABBITMQ_CONFIG_FILE": str(home / "rabbitmq"),  # none there: the defaults
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(home / "advanced.config"),
        "RABBITMQ_CONF_ENV_FILE": str(home / "rabbitmq-env.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
        "RABBITMQ_PID_FILE": str(home / "pid"),
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
    }
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    wrapper = subprocess.Popen(
        ["bash", "-c", f'ulimit -n {_nofile()} && exec "$0"', SERVER],
        env=env,
        cwd=home,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=out,
        start_new_session=True,
    )
    beam: int | None = None
    # A SIGTERM (or a SIGINT, which a shell ignores in background jobs) ends the run through
    # the finally below, so the node never outlives the benchmark.
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        signal.signal(sig, _exit)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers(port):
            if wrapper.poll() is not None:
                raise PrivateRabbitMQUnavailable(
                    f"the private node {name} exited with {wrapper.returncode} while starting "
                    f"(its log: {log or home / 'log'})"
                )
            if time.monotonic() > deadline:
                raise PrivateRabbitMQUnavailable(f"the private node {name} did not start in time")
            time.sleep(0.5)
        beam = int((home / "pid").read_text().strip() or 0) or None
        yield f"amqp://guest:guest@127.0.0.1:{port}/"
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if beam is None and (home / "pid").exists():
            with contextlib.suppress(ValueError, OSError):
                beam = int((home / "pid").read_text().strip())
        if beam is not None:
            _stop(beam)
        if wrapper.poll() is None:
            _stop(wrapper.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            wrapper.wait(timeout=10)
        if not isinstance(out, int):
            out.close()
        shutil.rmtree(home, ignore_errors=True)


__all__ = ["PrivateRabbitMQUnavailable", "private_rabbitmq"]
