"""What the benchmarks share: the machine line, result files, servers run as child processes
(always stopped by their pid), store seeding by bulk insert, a minimal HTTP/1.1 client,
long-polling components in client processes, and scratch NATS JetStream streams.

The client is plain asyncio streams on purpose: one keep-alive connection per simulated
component, no pool, so a run measures the server and not a client library.

Run as a script, this module is such a client process (see :func:`http_workers`)::

    python bench/_common.py --port P --first F --count C [--path PATH]
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import re
import resource
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
PYTHON = str(ROOT / ".venv" / "bin" / "python")
PACKAGES = (
    "uvicorn",
    "uvloop",
    "httptools",
    "starlette",
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "orjson",
    "nats-py",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} -")
    return (
        f"nproc {os.cpu_count()}, {cpu}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}; " + ", ".join(versions)
    )


def header() -> dict[str, str]:
    """Print the exact command and the machine; return both for the result line."""
    command = shlex.join([sys.executable, *sys.argv])
    where = machine()
    print("command:", command)
    print("machine:", where)
    sys.stdout.flush()
    return {"command": command, "machine": where}


def save(name: str, head: dict[str, str], rows: Sequence[dict[str, Any]]) -> None:
    """Append one JSON line to bench/results/<name>.jsonl (git-ignored)."""
    RESULTS.mkdir(exist_ok=True)
    line = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **head, "rows": list(rows)}
    with (RESULTS / f"{name}.jsonl").open("a") as out:
        out.write(json.dumps(line) + "\n")


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    print()
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column, "-")
            cells.append(f"{value:.3g}" if isinstance(value, float) else str(value))
        print("| " + " | ".join(cells) + " |")
    sys.stdout.flush()


def raise_nofile(wanted: int = 1 << 16) -> int:
    """Raise this process's RLIMIT_NOFILE (which the children it starts inherit) to
    ``wanted``: the soft limit up to the hard one, and the hard one too where allowed (root).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, wanted))
            hard = wanted
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pct(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def median(values: Sequence[float]) -> float:
    return pct(values, 0.5)


def cpu_seconds(pid: int) -> float:
    """The process's user plus system CPU time so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Child:
    """A child process (a server or a client worker), stopped by its pid."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log: Path | None = None,
        env: dict[str, str] | None = None,
        pipe: bool = False,
        cwd: Path | None = None,
    ) -> None:
        self.argv = list(argv)
        out = subprocess.PIPE if pipe else (open(log, "ab") if log else subprocess.DEVNULL)  # noqa: SIM115
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE if pipe else subprocess.DEVNULL,
            stdout=out,
            stderr=out if not pipe else (open(log, "ab") if log else subprocess.DEVNULL),  # noqa: SIM115
            env={**os.environ, **(env or {})},
            cwd=cwd,
            text=pipe,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()


@contextlib.contextmanager
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    try:
        yield started
    finally:
        for child in reversed(started):
            child.stop()


def wait_http(port: int, path: str = "/", timeout: float = 60.0) -> None:
    """Until the server on the port answers ``path`` with any status."""
    deadline = time.monotonic() + timeout

    async def once() -> None:
        conn = await Conn.open(port)
        try:
            await conn.request("GET", path)
        finally:
            await conn.close()

    while True:
        try:
            asyncio.run(once())
            return
        except (OSError, asyncio.IncompleteReadError, ConnectionError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing answers on port {port}") from None
            time.sleep(0.05)


def serve_policy_pubsub(
    port: int,
    database_url: str,
    log: Path,
    *,
    loop: str = "auto",
    log_level: str = "info",
    extra: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> Child:
    """The policy-pubsub server as ``serve`` runs it, plus the benchmark probes; ``env``
    adds ``POLICY_PUBSUB_*`` settings (e.g. the router URL).
    """
    child = Child(
        [
            PYTHON,
            str(BENCH / "_serve.py"),
            "--port",
            str(port),
            "--database-url",
            database_url,
            "--loop",
            loop,
            "--log-level",
            log_level,
            *extra,
        ],
        log=log,
        env=env,
    )
    wait_http(port, "/healthcheck")
    return child


# -- a minimal HTTP/1.1 client over asyncio streams ------------------------------------------


class Conn:
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.host = f"127.0.0.1:{port}".encode()

    @classmethod
    async def open(cls, port: int, source: str | None = None) -> Conn:
        """``source``: the local address to connect from (a loopback one, 127.x.y.z): each
        has its own ~28,000 ephemeral ports (net.ipv4.ip_local_port_range) towards the server.
        """
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, limit=1 << 24, local_addr=(source, 0) if source else None
        )
        return cls(reader, writer, port)

    def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        lines = [f"{method} {path} HTTP/1.1".encode(), b"host: " + self.host]
        for name, value in headers:
            lines.append(f"{name}: {value}".encode())
        if body is not None:
            lines.append(b"content-type: application/json")
            lines.append(b"content-length: " + str(len(body)).encode())
        self.writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + (body or b""))

    async def response(self) -> tuple[int, bytes]:
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head[:-4].split(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length = None
        chunked = False
        for line in header_lines:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            return status, b"".join(parts)
        return status, await self.reader.readexactly(length or 0)

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> tuple[int, bytes]:
        self.send(method, path, body, headers)
        return await self.response()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


# -- seeding a store by bulk insert ------------------------------------------------------------


def policy(policy_id: str, policy_type: str, value: int) -> dict[str, Any]:
    return {
        "type": policy_type,
        "type_version": "1.0.0",
        "version": "1.0.0",
        "metadata": {"policy-id": policy_id, "policy-version": "1.0.0"},
        "properties": {
            "threshold": value,
            "domain": "measurementsForVfScaling",
            "description": "benchmark policy " + "x" * 100,
        },
    }


async def seed(
    database_url: str,
    subscriptions: Sequence[tuple[str, str, list[dict[str, Any]]]],
    policies: Sequence[dict[str, Any]] = (),
) -> None:
    """Insert subscriptions (id, topic, filters), their topics and policies in bulk, as
    ``subscribe`` would have left them (without the starting snapshots), at revision 1.
    """
    import orjson
    from sqlalchemy import insert, update

    sys.path.insert(0, str(ROOT))
    from policy_pubsub.store import Store
    from policy_pubsub.store.tables import policies as policies_table
    from policy_pubsub.store.tables import store_revision, subscription_marks, topics
    from policy_pubsub.store.tables import subscriptions as subscriptions_table

    store = Store(database_url)
    await store.open()
    at = int(time.time() * 1000)
    try:
        async with store.write() as tx:
            await tx.conn.execute(update(store_revision).values(revision=1))
            rows = [
                {
                    "subscriber_id": sid,
                    "topic": topic,
                    "body": orjson.dumps(
                        {
                            "subscriber_id": sid,
                            "subscriber_topic": topic,
                            "action": "configure",
                            "ONAPName": "DCAE",
                            "ONAPComponent": "tca",
                            "ONAPInstance": sid,
                            "policy-filters": filters,
                        }
                    ).decode(),
                    "revision": 1,
                    "created_at": at,
                    "updated_at": at,
                }
                for sid, topic, filters in subscriptions
            ]
            for start in range(0, len(rows), 5000):
                await tx.conn.execute(insert(subscriptions_table), rows[start : start + 5000])
                await tx.conn.execute(
                    insert(subscription_marks),
                    [
                        {"subscriber_id": row["subscriber_id"], "last_revision": None}
                        for row in rows[start : start + 5000]
                    ],
                )
            names = sorted({topic for _, topic, _ in subscriptions})
            for start in range(0, len(names), 5000):
                await tx.conn.execute(
                    insert(topics),
                    [
                        {"name": n, "last_offset": 0, "created_at": at, "last_published_at": None}
                        for n in names[start : start + 5000]
                    ],
                )
            if policies:
                await tx.conn.execute(
                    insert(policies_table),
                    [
                        {
                            "policy_id": p["metadata"]["policy-id"],
                            "policy_version": "1.0.0",
                            "policy_type": p["type"],
                            "policy_type_version": "1.0.0",
                            "body": orjson.dumps(p).decode(),
                            "revision": 1,
                            "deployed_at": at,
                        }
                        for p in policies
                    ],
                )
    finally:
        await store.close()


def pg_database(name: str) -> str:
    """(Re)create a scratch PostgreSQL database; return its URL."""
    for argv in (
        ["dropdb", "--if-exists", "-h", "127.0.0.1", "-U", "postgres", name],
        ["createdb", "-h", "127.0.0.1", "-U", "postgres", name],
    ):
        subprocess.run(argv, check=True, capture_output=True)
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


def pg_drop(name: str) -> None:
    subprocess.run(
        ["dropdb", "--if-exists", "-h", "127.0.0.1", "-U", "postgres", name],
        check=False,
        capture_output=True,
    )


# -- long-polling components in client processes ---------------------------------------------

POLL_TIMEOUT_MS = 120_000
#: Component i long-polls its own topic ``comp-<i>`` as consumer group ``g``.
EVENTS_PATH = "/events/comp-{i}/g/c?timeout={timeout}"
#: Connections left idle longer than this are opened anew before the next poll (uvicorn's
#: keep-alive timeout is 5 s).
IDLE_REOPEN_SECONDS = 3.0
#: Older snapshots a component takes before the one of the round, at most.
MAX_STALE_ANSWERS = 5


async def stdin_lines() -> asyncio.Queue[str]:
    """The lines a client process is told on its standard input; "quit" at its end."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def reader() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line.strip())
        loop.call_soon_threadsafe(queue.put_nowait, "quit")

    loop.run_in_executor(None, reader)
    return queue


def say(**message: Any) -> None:
    """Answer the driver: one JSON line on standard output."""
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def http_worker(
    port: int, first: int, count: int, path: str, source_net: str | None = None
) -> None:
    """Components ``first .. first+count-1``, one connection each. Told "poll", each sends
    its long-poll (``path`` with ``{i}`` and ``{timeout}``); told "collect", the process
    reports when each answer arrived (``time.monotonic()``) and how many were not a message.

    A connection is opened right before its first request, and opened anew before a poll
    when it was left idle a while: the server counts a connection that has sent no request
    yet against its ``max_incomplete_requests`` and closes it after ``header_timeout_seconds``,
    and uvicorn closes a keep-alive connection idle for 5 s (a poll sent as it does is lost).

    ``source_net`` (three octets of a loopback address, ``127.1.0``): each time the
    connections are opened anew they connect from the next address of that /24, so the ports
    the last ones left in TIME_WAIT are not needed, nor shared with other workers.
    """
    commands = await stdin_lines()
    conns: list[Conn] = []
    used = 0.0
    openings = 0
    say(ready=True)
    while True:
        command = await commands.get()
        if command == "quit":
            break
        fresh = time.monotonic() - used > IDLE_REOPEN_SECONDS
        source = None
        if fresh:
            for conn in conns:
                await conn.close()
            conns = []
            if source_net is not None:
                source = f"{source_net}.{openings % 254 + 1}"
            openings += 1
        for start in range(0, count, 200):
            batch = range(start, min(count, start + 200))
            if fresh:
                conns += await asyncio.gather(*(Conn.open(port, source) for _ in batch))
            for i in batch:
                conns[i].send("GET", path.format(i=first + i, timeout=POLL_TIMEOUT_MS))
        arrived: list[float] = [0.0] * count

        # The round's push carries a policy whose threshold is the round's number: an answer
        # without it is an older snapshot this component had not consumed yet (e.g. one whose
        # earlier poll was refused), and a component polls again until it has the new one.
        number = command.partition(" ")[2]
        # (a message may come as a JSON string, its quotes escaped)
        current = (
            re.compile(rb'threshold\\*"\s*:\s*' + number.encode() + rb"\b") if number else None
        )
        stale = [0]

        async def one(
            i: int,
            conn: Conn,
            arrived: list[float] = arrived,
            current: re.Pattern[bytes] | None = current,
            stale: list[int] = stale,
        ) -> int:
            for _ in range(MAX_STALE_ANSWERS + 1):
                try:
                    status, body = await conn.response()
                except (asyncio.IncompleteReadError, ConnectionError):
                    return -1  # the server closed the connection: no answer
                if status != 200 or body in (b"[]", b""):
                    return -1
                if current is None or current.search(body):
                    arrived[i] = time.monotonic()
                    return status
                stale[0] += 1
                conn.send("GET", path.format(i=first + i, timeout=POLL_TIMEOUT_MS))
            return -1

        tasks = [asyncio.create_task(one(i, conn)) for i, conn in enumerate(conns)]
        say(sent=True)
        await commands.get()  # "collect", after the push
        # Bounded: the server answers every poll by its timeout (at most POLL_TIMEOUT_MS).
        await asyncio.wait(tasks, timeout=POLL_TIMEOUT_MS / 1000 + 30)
        statuses = [t.result() if t.done() else -1 for t in tasks]
        for task in tasks:
            task.cancel()
        # The connection answered first has been idle longest by the next poll.
        used = min((a for a in arrived if a), default=0.0)
        if any(s == -1 for s in statuses):
            used = 0.0  # some may be closed or still waiting: open them all anew
        bad = sum(1 for s in statuses if s != 200)
        say(arrived=arrived, bad=bad, stale=stale[0])
    for conn in conns:
        await conn.close()


class Workers:
    """Client processes, told the same line at once and answering one JSON line each."""

    def __init__(self, argvs: list[list[str]], log: Path) -> None:
        self.children = [Child(argv, pipe=True, log=log) for argv in argvs]

    def ask(self, line: str) -> None:
        for child in self.children:
            assert child.process.stdin is not None
            child.process.stdin.write(line + "\n")
            child.process.stdin.flush()

    def expect(self, key: str) -> list[dict[str, Any]]:
        answers = []
        for child in self.children:
            assert child.process.stdout is not None
            line = child.process.stdout.readline()
            if not line:
                raise RuntimeError(f"a client worker died (exit {child.process.poll()})")
            answer = json.loads(line)
            if key not in answer:
                raise RuntimeError(f"unexpected worker answer {answer}")
            answers.append(answer)
        return answers


def split(n: int, workers: int, first: int = 0) -> list[tuple[int, int]]:
    """``n`` components from ``first`` in ``workers`` near-equal (first, count) parts."""
    share, extra = divmod(n, workers)
    parts = []
    for w in range(workers):
        count = share + (1 if w < extra else 0)
        parts.append((first, count))
        first += count
    return parts


def http_workers(
    parts: Sequence[tuple[int, int, int]],
    log: Path,
    path: str = EVENTS_PATH,
    *,
    own_sources: bool = False,
) -> Workers:
    """One client process (:func:`http_worker`) per (port, first, count) part: components
    ``first .. first+count-1`` on the server at ``port``. The caller stops them
    (``Workers.children``) and waits for "ready". ``own_sources``: worker ``w`` connects from
    loopback addresses ``127.{w+1}.0.*`` of its own, not 127.0.0.1 (more connections to one
    port than the ~28,000 ephemeral ports of one address).
    """
    return Workers(
        [
            [
                PYTHON,
                str(BENCH / "_common.py"),
                "--port",
                str(port),
                "--first",
                str(first),
                "--count",
                str(count),
                "--path",
                path,
                *(["--source-net", f"127.{w + 1}.0"] if own_sources else []),
            ]
            for w, (port, first, count) in enumerate(parts)
        ],
        log,
    )


async def request(port: int, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
    """One request on a connection of its own; ``body`` is sent as JSON."""
    conn = await Conn.open(port)
    try:
        payload = None if body is None else json.dumps(body).encode()
        return await conn.request(method, path, payload)
    finally:
        await conn.close()


def held(port: int) -> int:
    """The long-polls the server on ``port`` holds (bench/_serve.py's probe)."""
    status, body = asyncio.run(request(port, "GET", "/_bench/held"))
    return int(json.loads(body)["held"]) if status == 200 else -1


def wait_held(port: int, n: int, timeout: float = 120, settle: float | None = None) -> int:
    """Until the server on ``port`` holds ``n`` long-polls; returns how many it holds. With
    ``settle``, also returns (short of ``n``) once the count stayed the same that long: polls
    the server refused do not come back.
    """
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while (count := held(port)) < n:
        now = time.monotonic()
        if count != last:
            last, since = count, now
        elif settle is not None and now - since > settle:
            return count
        if now > deadline:
            raise RuntimeError(f"the server holds {count} of {n} long-polls")
        time.sleep(0.02)
    time.sleep(0.1)  # let the last ones settle
    return count


def poll_round(
    workers: Workers,
    number: int,
    holders: Sequence[tuple[int, int]],
    push: Callable[[], None],
    settle: float | None = None,
) -> tuple[list[float], int]:
    """Round ``number``: every component sends its long-poll; once each (port, count) of
    ``holders`` holds its count (none given: after half a second; with ``settle``, or once
    the count stayed the same that long), ``push()``. Returns the seconds from the push to
    each component's answer (0 for a component that got none) and how many got no message:
    an empty answer, an error, or an answer before the push.
    """
    workers.ask(f"poll {number}")
    workers.expect("sent")
    for port, count in holders:
        wait_held(port, count, settle=settle)
    if not holders:
        time.sleep(0.5)
    started = time.monotonic()
    push()
    workers.ask("collect")
    answers = workers.expect("arrived")
    latencies = [a - started if a else 0.0 for answer in answers for a in answer["arrived"]]
    # A worker records only answers with a message (of this round, where it can tell).
    missed = sum(1 for x in latencies if x <= 0)
    return latencies, missed


# -- scratch NATS JetStream streams ------------------------------------------------------------


def nats_stream_name(kind: str) -> str:
    """A stream name of its own for one run (``POLICY_PUBSUB_NATS_STREAM``)."""
    return f"PPS_BENCH_{kind}_{uuid.uuid4().hex[:12]}"


async def delete_nats_stream(url: str, stream: str) -> None:
    """Delete a scratch stream, if it exists."""
    import nats
    import nats.js.errors

    nc = await nats.connect(url, allow_reconnect=False, connect_timeout=5)
    try:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="long-polling components (http_worker)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--path", default=EVENTS_PATH)
    parser.add_argument("--source-net", help="connect from 127.x.y.* (see http_worker)")
    args = parser.parse_args()
    raise_nofile()
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(http_worker(args.port, args.first, args.count, args.path, args.source_net))


if __name__ == "__main__":
    main()
