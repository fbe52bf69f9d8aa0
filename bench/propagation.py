"""Propagation: N components long-poll their own topics; one PAP push matches all of them.

    .venv/bin/python bench/propagation.py [--n 100 1000 5000] [--rounds 5] \
        [--systems pubsub bare amqp opal] [--workers 2] [--amqp-url amqp://...] \
        [--profile server.prof] [--opal-python bench/.venv-opal/bin/python]

Issue 16's two goals (N=1000 against bare and OPAL; N=10,000 with the clients over four
processes against bare)::

    .venv/bin/python bench/propagation.py --n 1000 --systems pubsub bare opal
    .venv/bin/python bench/propagation.py --n 10000 --workers 4 --systems pubsub bare

Each component is one keep-alive HTTP/1.1 connection driven by a minimal asyncio-streams
client, spread over ``--workers`` client processes. Per round: every component sends its
long-poll, the driver waits until the server holds all N, then pushes one policy that matches
them all and each client records when its answer arrived. Figures: the time from the push to
the p50, p99 and last (all-N) component, the median of each over the rounds; and the server
process's CPU time (user + system, from /proc) over the rounds divided by the answers it gave
(``cpu_per_answer_us``: N long-polls taken, one push and N answers per round).

The benchmark raises its soft open-file limit to the hard one (at most 65,536), which the
servers and client processes it starts inherit, and stops at once when that is too few for
the largest N (the server holds N connections). ``listen_overflows``: how many connections
the kernel dropped during the system's run because an accept queue was full (the machine's
TcpExt ListenOverflows, any process's): where it is not 0, some components' connections were
made only after retransmissions (a loaded machine, or a server slower to accept than N
clients connect). Each result row also names ``workers``; an OPAL row also gives
``connect_s`` (until all N subscribers were connected, before the rounds), ``reconnects``
(connections lost and made anew by then) and the versions of OPAL's environment.

- ``pubsub``: policy-pubsub (SQLite file, embedded router, the server of ``serve``), the N
  subscriptions seeded by bulk insert, each on its own topic; the push is
  ``POST /pap/v1/policies``, acknowledged only after the N snapshots are committed.
- ``amqp``: policy-pubsub as for ``pubsub`` but with ``--router amqp://...`` (RabbitMQ, an
  exchange of its own, deleted after), and each component a minimal AMQP consumer of its own
  queue (one channel each, on one connection per client process) that acknowledges what it
  gets. The subscriptions are seeded as for ``pubsub``, so before the rounds one untimed push
  makes the relay declare the N queues; then each round's push travels through the outbox,
  the relay and RabbitMQ with publisher confirms. RabbitMQ is a private node the benchmark
  starts for itself (bench/_rabbitmq.py: its own name, ports, database and open-file limit;
  stopped by its pid and deleted at the end, however the run ends), or the broker at
  ``--amqp-url`` when given (e.g. the shared one, when a private node cannot start). With
  ``--profile FILE`` the server writes a cProfile of its run (CPU time) there.
- ``pubsub-unguarded``: the same server on uvicorn's HTTP protocol itself, without the
  slow-client deadlines of policy_pubsub/connections.py (``_serve.py --unguarded``): what
  they cost.
- ``bare``: bench/_bare.py, an in-memory long-poll Starlette app on the same uvicorn, with the
  same clients: the ceiling for this stack.
- ``opal``: OPAL 0.9.9 (bench/.venv-opal, made by ``make -C bench opal-venv``; or another
  such environment given by ``--opal-python``): opal-server on loopback with its repo watcher
  off, N websocket subscribers (fastapi_websocket_pubsub clients, as opal-client uses) on one
  data topic, at most 100 connecting at once per client process, and ``POST /data/config``
  with inline data.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BENCH,
    PYTHON,
    Child,
    Workers,
    children,
    cpu_seconds,
    free_port,
    header,
    http_workers,
    median,
    pct,
    policy,
    poll_round,
    raise_nofile,
    request,
    save,
    say,
    seed,
    serve_policy_pubsub,
    split,
    stdin_lines,
    table,
    wait_http,
)
from _rabbitmq import private_rabbitmq

OPAL_PYTHON = BENCH / ".venv-opal" / "bin" / "python"
OPAL_TOPIC = "policy_data"
#: Open files a server needs besides its N connections (logs, database, listening socket).
FILES_SPARE = 256
#: Subscribers a client process is connecting at once, at most.
OPAL_CONNECTING = 100


# -- the client workers (HTTP: _common.http_worker) -----------------------------------


async def amqp_worker(url: str, first: int, count: int) -> None:
    """Components ``first .. first+count-1``, each consuming queue ``comp-<i>``."""
    import aio_pika

    commands = await stdin_lines()
    arrived: list[float] = [0.0] * count
    connection = await aio_pika.connect(url)
    # The server declares the queues when their first snapshot leaves (the warm-up push).
    ready = asyncio.get_running_loop().create_future()
    got = [False] * count

    def on_message_for(i: int) -> Any:
        async def on_message(message: Any) -> None:
            arrived[i] = time.monotonic()
            await message.ack()
            if not got[i]:
                got[i] = True
                if all(got) and not ready.done():
                    ready.set_result(None)

        return on_message

    channels = []
    for i in range(count):
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1)
        queue = await channel.get_queue(f"comp-{first + i}", ensure=False)
        await queue.consume(on_message_for(i))
        channels.append(channel)
    await ready  # each got its warm-up snapshot
    say(ready=True)
    while True:
        command = await commands.get()
        if command == "quit":
            break
        word, _, _ = command.partition(" ")
        if word == "poll":
            for i in range(count):
                arrived[i] = 0.0
            say(sent=True)
        elif word == "collect":
            deadline = time.monotonic() + 60
            while not all(arrived) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
            say(arrived=list(arrived), bad=sum(1 for a in arrived if not a))
    await connection.close()


async def opal_worker(port: int, count: int) -> None:
    """``count`` websocket subscribers of OPAL's data topic."""
    from fastapi_websocket_pubsub import PubSubClient  # type: ignore[import-not-found]

    commands = await stdin_lines()
    began = time.monotonic()
    arrived: list[float] = [0.0] * count
    expected = {"round": -1}
    connects = [0]  # more than count: connections lost and made anew

    async def on_connect(*_: Any) -> None:
        connects[0] += 1

    def callback_for(i: int) -> Any:
        async def callback(data: Any = None, topic: str = "") -> None:
            if json.dumps(data, default=str).find(f'"round": {expected["round"]}') >= 0:
                arrived[i] = time.monotonic()

        return callback

    # At most OPAL_CONNECTING at once per process, the next started as one is connected:
    # thousands of connection attempts at once overrun the one OPAL process, and a client
    # whose attempt fails tries again only after a random exponential back-off
    # (fastapi_websocket_rpc's default, up to 120 s), which must not hold up the others.
    connecting = asyncio.Semaphore(OPAL_CONNECTING)

    async def connect(i: int) -> Any:
        async with connecting:
            client = PubSubClient(on_connect=[on_connect])
            client.subscribe(OPAL_TOPIC, callback_for(i))
            client.start_client(f"ws://127.0.0.1:{port}/ws")
            await client.wait_until_ready()
            return client

    clients = list(await asyncio.gather(*(connect(i) for i in range(count))))
    say(ready=True, connect_s=round(time.monotonic() - began, 2), connects=connects[0])
    while True:
        command = await commands.get()
        if command == "quit":
            break
        word, _, value = command.partition(" ")
        if word == "poll":
            expected["round"] = int(value)
            for i in range(count):
                arrived[i] = 0.0
            say(sent=True)
        elif word == "collect":
            # OPAL answers its subscribers one by one: some ms each on a loaded machine.
            deadline = time.monotonic() + 60 + 0.04 * count
            while not all(arrived) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            say(arrived=list(arrived), bad=sum(1 for a in arrived if not a), connects=connects[0])
    for client in clients:
        await client.disconnect()


# -- the driver ---------------------------------------------------------------------------


def _rounds(
    workers: Workers,
    n: int,
    rounds: int,
    held_port: int | None,
    push: Any,
    server_pid: int | None = None,
) -> dict[str, Any]:
    p50s, p99s, alls, bads = [], [], [], 0
    cpu = cpu_seconds(server_pid) if server_pid is not None else 0.0
    for r in range(rounds):
        holders = [(held_port, n)] if held_port is not None else []
        latencies, missed = poll_round(workers, r + 1, holders, functools.partial(push, r + 1))
        bads += missed
        got = [x for x in latencies if x > 0]
        p50s.append(pct(got, 0.5))
        p99s.append(pct(got, 0.99))
        alls.append(max(got) if len(got) == n else float("inf"))
    # The server's CPU over the rounds (taking N polls, one push, N answers each) per answer.
    cpu_us = (cpu_seconds(server_pid) - cpu) / (rounds * n) * 1e6 if server_pid else None
    return {
        "p50_s": median(p50s),
        "p99_s": median(p99s),
        "all_s": median(alls),
        "cpu_per_answer_us": cpu_us,
        "all_rounds_s": [round(a, 4) for a in alls],
        "missed": bads,
    }


def run_pubsub(
    n: int, rounds: int, nworkers: int, tmp: Path, extra: Sequence[str] = ()
) -> dict[str, Any]:
    url = f"sqlite+aiosqlite:///{tmp / 'prop.db'}"
    subs = [(f"comp-{i}", f"comp-{i}", [{"policy-id": ["bench.prop"]}]) for i in range(n)]
    asyncio.run(seed(url, subs, [policy("bench.prop", "bench.type", 0)]))
    port = free_port()
    with children() as started:
        server = serve_policy_pubsub(port, url, tmp / "server.log", extra=extra)
        started.append(server)
        workers = http_workers([(port, f, c) for f, c in split(n, nworkers)], tmp / "workers.log")
        started.extend(workers.children)
        workers.expect("ready")

        def push(r: int) -> None:
            status, body = asyncio.run(
                request(
                    port,
                    "POST",
                    "/pap/v1/policies",
                    {"policies": [policy("bench.prop", "bench.type", r)]},
                )
            )
            if status != 200 or json.loads(body)["notified"] != n:
                raise RuntimeError(f"push failed: {status} {body[:200]!r}")

        return _rounds(workers, n, rounds, port, push, server.pid)


AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


def _push(port: int, n: int, r: int) -> None:
    status, body = asyncio.run(
        request(
            port, "POST", "/pap/v1/policies", {"policies": [policy("bench.prop", "bench.type", r)]}
        )
    )
    if status != 200 or json.loads(body)["notified"] != n:
        raise RuntimeError(f"push failed: {status} {body[:200]!r}")


def _wait_relayed(port: int, timeout: float = 300) -> None:
    """Until the outbox is empty: every queue is declared and holds its snapshot."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = asyncio.run(request(port, "GET", "/healthcheck"))
        if status == 200 and json.loads(body)["details"]["outbox"]["depth"] == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError("the relay did not empty the outbox in time")
        time.sleep(0.1)


def _delete_amqp(url: str, exchange: str, queues: list[str]) -> None:
    import aio_pika

    async def delete() -> None:
        connection = await aio_pika.connect(url)
        try:
            channel = await connection.channel()
            for queue in queues:
                await channel.queue_delete(queue)
            await channel.exchange_delete(exchange)
        finally:
            await connection.close()

    asyncio.run(delete())


# Set by main: the broker to use instead of a private node, and where the server profiles.
SHARED_AMQP_URL: str | None = None
SERVER_PROFILE: Path | None = None


def run_amqp(n: int, rounds: int, nworkers: int, tmp: Path) -> dict[str, Any]:
    if SHARED_AMQP_URL is not None:
        return _run_amqp(SHARED_AMQP_URL, n, rounds, nworkers, tmp, shared=True)
    with private_rabbitmq(tmp / "rabbitmq.log") as url:
        return _run_amqp(url, n, rounds, nworkers, tmp, shared=False)


def _run_amqp(
    amqp_url: str, n: int, rounds: int, nworkers: int, tmp: Path, *, shared: bool
) -> dict[str, Any]:
    url = f"sqlite+aiosqlite:///{tmp / 'prop.db'}"
    subs = [(f"comp-{i}", f"comp-{i}", [{"policy-id": ["bench.prop"]}]) for i in range(n)]
    asyncio.run(seed(url, subs, [policy("bench.prop", "bench.type", 0)]))
    exchange = f"bench-prop-{free_port()}"
    port = free_port()
    try:
        with children() as started:
            server = serve_policy_pubsub(
                port,
                url,
                tmp / "server.log",
                env={
                    "POLICY_PUBSUB_ROUTER_URL": amqp_url,
                    "POLICY_PUBSUB_AMQP_EXCHANGE": exchange,
                },
                extra=["--profile", str(SERVER_PROFILE)] if SERVER_PROFILE else [],
            )
            started.append(server)
            _push(port, n, -1)  # untimed: the relay declares the N queues
            _wait_relayed(port)
            workers = Workers(
                [
                    [
                        PYTHON,
                        __file__,
                        "--worker",
                        "amqp",
                        "--amqp-url",
                        amqp_url,
                        "--first",
                        str(f),
                        "--count",
                        str(c),
                    ]
                    for f, c in split(n, nworkers)
                ],
                tmp / "workers.log",
            )
            started.extend(workers.children)
            workers.expect("ready")
            return _rounds(workers, n, rounds, None, lambda r: _push(port, n, r), server.pid)
    finally:
        if shared:  # a private node goes with everything on it
            _delete_amqp(amqp_url, exchange, [f"comp-{i}" for i in range(n)])


def run_bare(n: int, rounds: int, nworkers: int, tmp: Path) -> dict[str, Any]:
    port = free_port()
    with children() as started:
        bare = Child([PYTHON, str(BENCH / "_bare.py"), "--port", str(port)], log=tmp / "bare.log")
        started.append(bare)
        wait_http(port, "/healthcheck")
        workers = http_workers([(port, f, c) for f, c in split(n, nworkers)], tmp / "workers.log")
        started.extend(workers.children)
        workers.expect("ready")

        def push(r: int) -> None:
            status, _ = asyncio.run(
                request(port, "POST", "/push", policy("bench.prop", "bench.type", r))
            )
            if status != 200:
                raise RuntimeError(f"push failed: {status}")

        return _rounds(workers, n, rounds, port, push, bare.pid)


def listen_overflows() -> int:
    """The machine's count of connections dropped on a full accept queue (TcpExt
    ListenOverflows, any listening socket): where it grows during a run, some components
    connected late, after the kernel's retransmissions.
    """
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            return dict(zip(names.split()[1:], map(int, values.split()[1:]), strict=True))[
                "ListenOverflows"
            ]
    return 0


OPAL_PACKAGES = ("opal-server", "opal-client", "fastapi-websocket-pubsub", "uvicorn", "websockets")


def opal_versions() -> str:
    """The versions of what the OPAL runner uses, from OPAL's environment."""
    script = (
        "import importlib.metadata as m\n"
        f"print(', '.join(f'{{p}} {{m.version(p)}}' for p in {OPAL_PACKAGES!r}))"
    )
    run = subprocess.run(
        [str(OPAL_PYTHON), "-c", script], capture_output=True, text=True, check=True
    )
    return run.stdout.strip()


def run_opal(n: int, rounds: int, nworkers: int, tmp: Path) -> dict[str, Any]:
    if not OPAL_PYTHON.exists():
        raise RuntimeError(f"{OPAL_PYTHON} is missing: make -C bench opal-venv")
    versions = opal_versions()
    port = free_port()
    # Worked out from opal_server/config.py and opal_common/config.py of 0.9.9: no policy
    # repo and its watcher off; no broadcaster (one process, in-memory pub/sub); no auth keys,
    # so the JWT verifier is disabled and /ws and /data/config are open; no statistics.
    env = {
        "OPAL_REPO_WATCHER_ENABLED": "false",
        "OPAL_POLICY_REPO_URL": "",
        "OPAL_BROADCAST_URI": "",
        "OPAL_STATISTICS_ENABLED": "false",
        "OPAL_DATA_CONFIG_SOURCES": json.dumps({"config": {"entries": []}}),
        "OPAL_LOG_LEVEL": "WARNING",
        "OPAL_LOG_FORMAT_INCLUDE_PID": "false",
    }
    with children() as started:
        opal = Child(
            [
                str(OPAL_PYTHON),
                "-m",
                "uvicorn",
                "opal_server.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            log=tmp / "opal.log",
            env=env,
            cwd=tmp,  # OPAL writes its jwks_dir into the working directory
        )
        started.append(opal)
        wait_http(port, "/healthcheck")
        workers = Workers(
            [
                [
                    str(OPAL_PYTHON),
                    __file__,
                    "--worker",
                    "opal",
                    "--port",
                    str(port),
                    "--count",
                    str(c),
                ]
                for _, c in split(n, nworkers)
            ],
            tmp / "workers.log",
        )
        started.extend(workers.children)
        ready = workers.expect("ready")
        connect_s = max(answer["connect_s"] for answer in ready)
        reconnects = sum(answer["connects"] for answer in ready) - n

        def push(r: int) -> None:
            update = {
                "entries": [
                    {
                        "url": "",
                        "data": {"round": r, "policy": policy("bench.prop", "bench.type", r)},
                        "topics": [OPAL_TOPIC],
                        "dst_path": "/bench",
                    }
                ],
                "reason": "benchmark",
            }
            status, body = asyncio.run(request(port, "POST", "/data/config", update))
            if status != 200:
                raise RuntimeError(f"OPAL push failed: {status} {body[:300]!r}")

        return {
            **_rounds(workers, n, rounds, None, push, opal.pid),
            "connect_s": connect_s,  # until all N subscribers were connected, before the rounds
            "reconnects": reconnects,  # connections lost (and made anew) until then
            "versions": versions,
        }


def run_pubsub_unguarded(n: int, rounds: int, nworkers: int, tmp: Path) -> dict[str, Any]:
    """policy-pubsub on uvicorn's HTTP protocol itself, without the slow-client deadlines
    (policy_pubsub/connections.py), to show what they cost.
    """
    return run_pubsub(n, rounds, nworkers, tmp, ["--unguarded"])


RUNNERS = {
    "pubsub": run_pubsub,
    "pubsub-unguarded": run_pubsub_unguarded,
    "bare": run_bare,
    "amqp": run_amqp,
    "opal": run_opal,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--systems", nargs="+", default=["pubsub", "bare", "opal"], choices=list(RUNNERS)
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker", choices=["amqp", "opal"], help=argparse.SUPPRESS)
    parser.add_argument(
        "--amqp-url", help="use this RabbitMQ (e.g. the shared one) instead of a private node"
    )
    parser.add_argument("--profile", type=Path, help="cProfile (CPU time) of the amqp server")
    parser.add_argument(
        "--opal-python",
        type=Path,
        help="the python of OPAL's environment (default bench/.venv-opal/bin/python)",
    )
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    global SHARED_AMQP_URL, SERVER_PROFILE, OPAL_PYTHON
    SHARED_AMQP_URL, SERVER_PROFILE = args.amqp_url, args.profile
    if args.opal_python is not None:
        OPAL_PYTHON = args.opal_python.absolute()  # not resolved: a venv's python is a symlink
    files = raise_nofile()
    if args.worker is None and files < max(args.n) + FILES_SPARE:
        parser.error(f"the open-file limit is {files}, too few for N={max(args.n)} (ulimit -n)")
    if args.worker is not None:
        try:
            import uvloop

            runner: Any = uvloop.run
        except ImportError:
            runner = asyncio.run
        if args.worker == "amqp":
            runner(amqp_worker(args.amqp_url or AMQP_URL, args.first, args.count))
        else:
            asyncio.run(opal_worker(args.port, args.count))
        return
    head = header()
    rows = []
    for n in args.n:
        for system in args.systems:
            overflows = listen_overflows()
            with tempfile.TemporaryDirectory(prefix="bench-prop-") as tmp:
                try:
                    row = {
                        "system": system,
                        "n": n,
                        "workers": args.workers,
                        **RUNNERS[system](n, args.rounds, args.workers, Path(tmp)),
                    }
                except Exception as exc:  # report and go on with the other systems
                    row = {
                        "system": system,
                        "n": n,
                        "workers": args.workers,
                        "error": str(exc)[:300],
                    }
                    logs = list(Path(tmp).glob("*.log"))
                    for log in logs:
                        tail = log.read_text(errors="replace")[-1500:]
                        print(f"--- {log.name} ---\n{tail}", file=sys.stderr)
            row["listen_overflows"] = listen_overflows() - overflows
            print(json.dumps(row), flush=True)
            rows.append(row)
    table(
        rows,
        [
            "system",
            "n",
            "workers",
            "p50_s",
            "p99_s",
            "all_s",
            "cpu_per_answer_us",
            "missed",
            "listen_overflows",
            "error",
        ],
    )
    save("propagation", head, rows)


if __name__ == "__main__":
    main()
