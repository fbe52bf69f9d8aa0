"""Durable consumer per consumer group versus reading by sequence, on NATS JetStream.

    .venv/bin/python bench/nats_consumers.py [--groups 100 1000] [--reads 300]

For each N it starts a private nats-server (JetStream, its own store directory, a free port;
stopped by its pid), publishes one snapshot to each of N topics (one component per topic, the
common case) and then measures, per strategy:

- ``durable``: one durable pull consumer per group, filtered on its topic (what a JetStream
  native design does): time to create the N consumers, nats-server memory (VmRSS) and store
  size after, the latency of one read (fetch 1 + synchronous ack), and the time the server
  takes to come back (restart until the stream answers) with the N consumers to recover.
- ``sequence``: what ``NatsRouter`` does: the group's position in the SQL store (SQLite here),
  a read is direct gets after that position; the ack saves the position within the default
  flush interval (0.2 s). ``sequence-sync`` writes it to the store before the ack returns
  (``position_flush_seconds=0``). Nothing per group on the server.
- ``ephemeral``: reading by sequence through a short-lived consumer per read (create, fetch,
  delete) instead of direct gets, for comparison.

Before each timed read one new message is published to that group's topic (not timed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nats
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from policy_pubsub.constants import DEFAULT_POSITION_FLUSH_SECONDS  # noqa: E402
from policy_pubsub.routers import OutMessage  # noqa: E402
from policy_pubsub.routers.nats import NatsRouter  # noqa: E402
from policy_pubsub.routers.nats_subjects import Subjects  # noqa: E402
from policy_pubsub.store import Store  # noqa: E402

STREAM = "BENCH"
NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """A private nats-server, stopped by its pid."""

    def __init__(self, store_dir: Path) -> None:
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.store_dir = store_dir
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            NATS_SERVER,
            *("-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store_dir)),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("nats-server did not start") from None
                await asyncio.sleep(0.01)
                continue
            writer.close()
            await writer.wait_closed()
            return

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            os.kill(self.process.pid, signal.SIGTERM)
            await asyncio.wait_for(self.process.wait(), timeout=30)
        self.process = None

    def rss_mb(self) -> float:
        if self.process is None:
            return float("nan")
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def disk_mb(self) -> float:
        size = sum(p.stat().st_size for p in self.store_dir.rglob("*") if p.is_file())
        return size / 2**20


@dataclass
class Row:
    strategy: str
    groups: int
    create_s: float | None
    rss_mb: float
    rss_delta_mb: float
    disk_mb: float
    read_p50_ms: float
    read_p99_ms: float
    restart_s: float | None


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def _prepare(
    server: Server, tmp: Path, n: int, flush: float = DEFAULT_POSITION_FLUSH_SECONDS
) -> tuple[NatsRouter, Store]:
    store = Store(f"sqlite+aiosqlite:///{tmp / 'store.db'}")
    await store.open()
    router = NatsRouter(
        server.url, store, stream=STREAM, max_age_seconds=3600, position_flush_seconds=flush
    )
    await router.start()
    for start in range(0, n, 500):
        await router.publish(
            [
                OutMessage(f"topic-{i}", f'{{"n":{i}}}', key=f"sub-{i}", revision=1)
                for i in range(start, min(n, start + 500))
            ]
        )
    return router, store


async def _restart(server: Server) -> float:
    await server.stop()
    started = time.perf_counter()
    await server.start()
    nc = await nats.connect(server.url)
    try:
        js = nc.jetstream(timeout=30)
        while True:
            try:
                await js.stream_info(STREAM)
                break
            except Exception:
                await asyncio.sleep(0.01)
    finally:
        await nc.close()
    return time.perf_counter() - started


async def bench_durable(n: int, reads: int, tmp: Path) -> Row:
    server = Server(tmp / "js")
    await server.start()
    router, store = await _prepare(server, tmp, n)
    subjects = Subjects(STREAM)
    nc = await nats.connect(server.url)
    try:
        js = nc.jetstream(timeout=30)
        base = server.rss_mb()
        started = time.perf_counter()
        for i in range(n):
            await js.add_consumer(
                STREAM,
                ConsumerConfig(
                    durable_name=f"g-{i}",
                    filter_subject=subjects.topic_filter(f"topic-{i}"),
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                ),
            )
        create = time.perf_counter() - started
        await asyncio.sleep(1)  # let the server settle before reading its memory
        rss = server.rss_mb()
        samples: list[float] = []
        for r in range(reads):
            i = r % n
            psub = await js.pull_subscribe_bind(f"g-{i}", STREAM)
            try:
                await router.publish([OutMessage(f"topic-{i}", '{"x":1}', key=f"x-{r}")])
                t0 = time.perf_counter()
                for msg in await psub.fetch(100, timeout=5):
                    await msg.ack_sync()
                samples.append(time.perf_counter() - t0)
            finally:
                await psub.unsubscribe()
    finally:
        await nc.close()
        await router.close()
        await store.close()
    disk = server.disk_mb()
    restart = await _restart(server)
    await server.stop()
    return Row(
        "durable",
        n,
        create,
        rss,
        rss - base,
        disk,
        _pct(samples, 0.5),
        _pct(samples, 0.99),
        restart,
    )


async def bench_sequence(n: int, reads: int, tmp: Path, *, flush: float | None = None) -> Row:
    server = Server(tmp / "js")
    await server.start()
    if flush is None:
        router, store = await _prepare(server, tmp, n)
    else:
        router, store = await _prepare(server, tmp, n, flush)
    try:
        base = server.rss_mb()
        # Every group reads its retained snapshot once: the positions now exist.
        for i in range(n):
            async with await router.read(f"topic-{i}", f"g-{i}", "c", timeout=0, limit=100) as d:
                await d.ack()
        samples: list[float] = []
        for r in range(reads):
            i = r % n
            await router.publish([OutMessage(f"topic-{i}", '{"x":1}', key=f"x-{r}")])
            t0 = time.perf_counter()
            async with await router.read(f"topic-{i}", f"g-{i}", "c", timeout=0, limit=100) as d:
                await d.ack()
            samples.append(time.perf_counter() - t0)
        await asyncio.sleep(1)
        rss = server.rss_mb()
    finally:
        await router.close()
        await store.close()
    disk = server.disk_mb()
    restart = await _restart(server)
    await server.stop()
    return Row(
        "sequence" if flush is None else "sequence-sync",
        n,
        None,
        rss,
        rss - base,
        disk,
        _pct(samples, 0.5),
        _pct(samples, 0.99),
        restart,
    )


async def bench_sequence_sync(n: int, reads: int, tmp: Path) -> Row:
    return await bench_sequence(n, reads, tmp, flush=0)


async def bench_ephemeral(n: int, reads: int, tmp: Path) -> Row:
    server = Server(tmp / "js")
    await server.start()
    router, store = await _prepare(server, tmp, n)
    subjects = Subjects(STREAM)
    nc = await nats.connect(server.url)
    positions = dict.fromkeys(range(n), 0)
    try:
        js: JetStreamContext = nc.jetstream(timeout=30)
        base = server.rss_mb()
        samples: list[float] = []
        for r in range(reads):
            i = r % n
            await router.publish([OutMessage(f"topic-{i}", '{"x":1}', key=f"x-{r}")])
            t0 = time.perf_counter()
            psub = await js.pull_subscribe(
                subjects.topic_filter(f"topic-{i}"),
                stream=STREAM,
                config=ConsumerConfig(
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                    opt_start_seq=positions[i] + 1,
                    ack_policy=AckPolicy.NONE,
                    inactive_threshold=30.0,
                    mem_storage=True,
                ),
            )
            try:
                info = await psub.consumer_info()
                if info.num_pending:
                    msgs = await psub.fetch(min(100, info.num_pending), timeout=5)
                    positions[i] = msgs[-1].metadata.sequence.stream
            finally:
                await js.delete_consumer(STREAM, info.name)
                await psub.unsubscribe()
            samples.append(time.perf_counter() - t0)
        rss = server.rss_mb()
    finally:
        await nc.close()
        await router.close()
        await store.close()
    disk = server.disk_mb()
    await server.stop()
    return Row(
        "ephemeral",
        n,
        None,
        rss,
        rss - base,
        disk,
        _pct(samples, 0.5),
        _pct(samples, 0.99),
        None,
    )


def _machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    version = subprocess.run(
        [NATS_SERVER, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return f"nproc {os.cpu_count()}, {cpu}, {platform.system()} {platform.release()}, {version}"


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--groups", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--reads", type=int, default=300)
    args = parser.parse_args()
    print("command:", shlex.join([sys.executable, *sys.argv]))
    print("machine:", _machine())
    rows: list[Row] = []
    for n in args.groups:
        for bench in (bench_durable, bench_sequence, bench_sequence_sync, bench_ephemeral):
            with tempfile.TemporaryDirectory(prefix="nats-bench-") as tmp:
                rows.append(await bench(n, args.reads, Path(tmp)))
    print()
    print(
        "| strategy | groups | create all (s) | server RSS (MB) | RSS delta (MB) | store (MB) "
        "| read p50 (ms) | read p99 (ms) | restart (s) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row.strategy} | {row.groups} | {_fmt(row.create_s, '.2f')} "
            f"| {row.rss_mb:.1f} | {row.rss_delta_mb:+.1f} | {row.disk_mb:.1f} "
            f"| {row.read_p50_ms:.2f} | {row.read_p99_ms:.2f} | {_fmt(row.restart_s, '.2f')} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
