"""Two replicas on one PostgreSQL database: what a change made on one costs the other, a
subscribe storm and the propagation of a push to long-polling components; with the embedded
router and with NATS JetStream; the code under test against another version of it, in the
same run.

    .venv/bin/python bench/replicas.py [--router embedded nats] [--nats URL] \
        [--parts latency storm propagation] [--subs 20000] [--policies 1000] [--pushes 30] \
        [--pollers 2000] [--rounds 5] [--storm 10000] [--clients 64] [--storm-seconds 60] \
        [--storm-only] [--databases pg,sqlite] [--profile DIR] [--before REF] [--only after]

For each version (``before``: the git ref ``--before``, default ``main``, exported to a
scratch directory; ``after``: this tree) and each ``--router``, in a scratch PostgreSQL
database (named with this process's id, so that two runs at once do not drop each other's)
seeded by bulk insert with ``--policies`` policies (``bench.p0`` ...; policy ``j`` of type
``bench.type{j % 100}``, so ten of each type, and ``bench.prop``), ``--subs`` subscriptions
(each on its own topic, filtering on one of the first 1,000 policy ids; one in a thousand
filters on ``bench.push``) and, with the ``propagation`` part, ``--pollers`` more
(``comp-<i>``, each on its own topic, filtering on ``bench.prop``), two servers as ``serve``
runs them (bench/_serve.py), A and B. ``embedded``: topics in the database; ``nats``: the NATS
JetStream at ``--nats``, in a stream of this run's own (``POLICY_PUBSUB_NATS_STREAM``),
deleted at the end. Each row also gives how long A and B took to start (until
``/healthcheck`` answered: loading the subscriptions) and their RSS after start and at the
end of the ``latency`` and ``propagation`` parts.

``--parts`` chooses among these (all by default):

``latency``:

- ``push A``: ms per ``POST /pap/v1/policies`` of one small policy (``bench.push``, a new
  threshold each time, a snapshot for each of its ``--subs``/1000 subscribers, the count
  checked on every push), all on A;
- ``push A/B``: the same, alternating between A and B (what a load balancer does);
- ``decide B quiet``: ms per ``POST /decision/v1`` on B with nothing changing;
- ``decide B after push A``: the same on B, sent as soon as a push on A was answered, and how
  many of those answered the policy as it was before that push (``stale after push A``).

``propagation``: the ``--pollers`` components long-poll ``/events`` (one keep-alive
connection each, in client processes: bench/_common.py), one push on A of ``bench.prop``
matches them all, and the figure is the time from the push until all have it. Two layouts
take turns in each of ``--rounds`` rounds (which goes first alternates): ``2x`` half of the
components held by A and half by B; ``1x`` all held by A (B runs, holding none). With NATS the
replicas read the components' topics from JetStream, after the relay published the snapshots.
Per layout: the medians over the rounds of the p50 and the last answer, in ``2x`` the last
answer from each replica, and each replica's CPU per round (from /proc).

``storm`` (issue 11: a fleet of components restarting together): ``--storm`` components, each
with its own subscriber id, its own topic and a filter as real components have (even ones:
three policy ids; odd ones: one policy type, ten policies), subscribe from ``--clients``
connections, half on each replica of a pair started afresh for it; ``storm s`` is the time
until all are acknowledged (or ``--storm-seconds`` passed: the rate is then of those
answered), ``subscribes/s`` the rate, ``CPU ms/sub`` the servers' CPU time per subscribe.
Then the same on one server over SQLite (with the same router), seeded alike.
``--databases`` chooses the storms: ``pg``, ``sqlite`` or both (``pg,sqlite``).

``--storm-only`` is ``--parts storm`` and seeds no subscriptions unless ``--subs`` is given.
``--profile DIR`` runs the servers of the storm under cProfile (bench/_serve.py, by the
environment variable ``POLICY_PUBSUB_BENCH_PROFILE``) and leaves their profiles and statement
counts in DIR, named by version, router and database.

Medians (and p90) of the latencies; client and servers share the machine's cores. A server
or client process is stopped by its pid, and the scratch database and stream are dropped,
also when the run fails or is stopped (SIGTERM, ^C).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PYTHON,
    ROOT,
    Child,
    Conn,
    Workers,
    children,
    cpu_seconds,
    delete_nats_stream,
    free_port,
    header,
    http_workers,
    median,
    nats_stream_name,
    pct,
    pg_database,
    pg_drop,
    policy,
    poll_round,
    raise_nofile,
    request,
    rss_mb,
    save,
    table,
    wait_http,
)

NATS_URL = "nats://127.0.0.1:4222"
PARTS = ("latency", "storm", "propagation")
START_TIMEOUT = 600.0  # loading 100,000 subscriptions on a loaded machine takes a while

DECIDE = json.dumps(
    {
        "ONAPName": "DCAE",
        "ONAPComponent": "tca",
        "ONAPInstance": "bench",
        "action": "configure",
        "resource": {"policy-id": ["bench.push"]},
    }
).encode()

SEED = """
import asyncio, sys
sys.path.insert(0, {bench!r})
from _common import policy, seed
def ids(i):
    return ["bench.push" if i % 1000 == 0 else f"bench.p{{i % 1000}}"]
subs = [(f"s-{{i}}", f"t-{{i}}", [{{"policy-id": ids(i)}}]) for i in range({subs})]
prop = [{{"policy-id": ["bench.prop"]}}]
subs += [(f"comp-{{i}}", f"comp-{{i}}", prop) for i in range({pollers})]
policies = [policy(f"bench.p{{j}}", f"bench.type{{j % 100}}", j) for j in range({policies})]
asyncio.run(seed({url!r}, subs, policies + [policy("bench.prop", "bench.type", 0)]))
"""


def _tree(version: str, before: str, tmp: Path) -> Path:
    """The source tree of a version: this one, or ``before`` exported from git."""
    if version == "after":
        return ROOT
    tree = tmp / "before"
    if not tree.exists():
        tree.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", before], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def _serve(
    tree: Path, url: str, log: Path, env: dict[str, str], started: list[Child]
) -> tuple[Child, int, float]:
    """A server of the version in ``tree``, added to ``started`` (stopped by its pid when
    that ends); returns it, its port and how long it took to answer ``/healthcheck``.
    """
    port = free_port()
    began = time.perf_counter()
    child = Child(
        [
            PYTHON,
            str(tree / "bench" / "_serve.py"),
            "--port",
            str(port),
            "--database-url",
            url,
            "--log-level",
            "warning",
        ],
        log=log,
        env=env,
    )
    started.append(child)
    wait_http(port, "/healthcheck", timeout=START_TIMEOUT)
    return child, port, time.perf_counter() - began


@contextlib.contextmanager
def _router(router: str, nats_url: str) -> Iterator[dict[str, str]]:
    """The servers' environment for ``router``: with NATS, a stream of its own, deleted
    when the block ends.
    """
    if router == "embedded":
        yield {}
        return
    stream = nats_stream_name("REPLICAS")
    try:
        yield {"POLICY_PUBSUB_ROUTER_URL": nats_url, "POLICY_PUBSUB_NATS_STREAM": stream}
    finally:
        try:
            asyncio.run(delete_nats_stream(nats_url, stream))
        except Exception as exc:  # say so, and let the run's own outcome stand
            print(f"could not delete the NATS stream {stream}: {exc!r}", file=sys.stderr)


def _median_ms(samples: list[float]) -> float:
    return pct(samples, 0.5) * 1000


def _p90_ms(samples: list[float]) -> float:
    return pct(samples, 0.9) * 1000


class Replica:
    """A keep-alive connection to one server, opened again if the server closed it while it
    was idle (its keep-alive timeout), before a request is sent.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: Conn | None = None

    async def request(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = await Conn.open(self.port)
            try:
                return await self.conn.request(method, path, body)
            except (asyncio.IncompleteReadError, ConnectionError):
                await self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


def _affected(subs: int) -> int:
    """How many of the seeded subscriptions filter on ``bench.push``: one in a thousand."""
    return len(range(0, subs, 1000))


async def _push(conn: Replica, n: int, affected: int) -> float:
    body = json.dumps({"policies": [policy("bench.push", "bench.type", 1_000_000 + n)]}).encode()
    started = time.perf_counter()
    status, answer = await conn.request("POST", "/pap/v1/policies", body)
    elapsed = time.perf_counter() - started
    if status != 200:
        raise RuntimeError(f"push answered {status}: {answer[:200]!r}")
    if json.loads(answer)["notified"] != affected:
        raise RuntimeError(f"push notified other than {affected} subscribers: {answer[:200]!r}")
    return elapsed


async def _decide(conn: Replica, threshold: int | None = None) -> float:
    """Seconds a decision took; if it did not answer ``threshold`` (the last push's), also
    counted in ``STALE``.
    """
    started = time.perf_counter()
    status, answer = await conn.request("POST", "/decision/v1", DECIDE)
    took = time.perf_counter() - started
    if status != 200:
        raise RuntimeError(f"decision answered {status}: {answer[:200]!r}")
    if threshold is not None:
        pushed = json.loads(answer)["policies"]["bench.push"]["properties"]["threshold"]
        STALE[0] += pushed != threshold
    return took


STALE = [0]  # decisions that answered the push before the last one


async def _replica_latencies(
    port_a: int, port_b: int, pushes: int, affected: int
) -> dict[str, Any]:
    a, b = Replica(port_a), Replica(port_b)
    n = 0
    try:
        for _ in range(3):  # warm up both
            await _push(a, n, affected)
            await _push(b, n + 1, affected)
            await _decide(b)
            n += 2
        on_a = []
        for _ in range(pushes):
            on_a.append(await _push(a, n, affected))
            n += 1
        alternating = []
        for i in range(pushes):
            alternating.append(await _push(a if i % 2 == 0 else b, n, affected))
            n += 1
        await _decide(b)
        quiet = [await _decide(b) for _ in range(pushes)]
        after_push = []
        STALE[0] = 0
        for _ in range(pushes):
            await _push(a, n, affected)
            after_push.append(await _decide(b, 1_000_000 + n))
            n += 1
    finally:
        await a.close()
        await b.close()
    return {
        "push A ms": _median_ms(on_a),
        "push A/B ms": _median_ms(alternating),
        "push A/B p90": _p90_ms(alternating),
        "decide B quiet ms": _median_ms(quiet),
        "decide B after push A ms": _median_ms(after_push),
        "decide after p90": _p90_ms(after_push),
        "stale after push A": f"{STALE[0]}/{pushes}",
    }


def _component(i: int, policies: int) -> dict[str, Any]:
    """The subscription request of the storm's component ``i``: its own topic, and a filter
    like a real component's (three policy ids, or one policy type).
    """
    if i % 2 == 0:
        wanted = [f"bench.p{(i + k) % policies}" for k in range(3)]
        filters: list[dict[str, Any]] = [{"policy-id": wanted}]
    else:
        filters = [{"policy-type": [f"bench.type{i % 100}"]}]
    return {
        "subscriber_topic": f"storm-topic-{i}",
        "ONAPName": "DCAE",
        "ONAPComponent": "storm",
        "ONAPInstance": f"storm-{i}",
        "policy-filters": filters,
    }


async def _storm(
    ports: list[int], count: int, clients: int, policies: int, seconds: float
) -> tuple[float, int]:
    """How long until ``count`` components, subscribing from ``clients`` connections spread
    over the ports, were all acknowledged, and how many were (fewer if ``seconds`` passed).
    """
    conns = [Replica(ports[c % len(ports)]) for c in range(clients)]
    bodies = [json.dumps(_component(i, policies)).encode() for i in range(count)]
    queue = list(range(count - 1, -1, -1))
    for conn in conns:  # connected before the clock starts, as a fleet's would be
        conn.conn = await Conn.open(conn.port)
    deadline = time.perf_counter() + seconds
    done = 0

    async def client(conn: Replica) -> None:
        nonlocal done
        while queue and time.perf_counter() < deadline:
            i = queue.pop()
            status, answer = await conn.request(
                "POST", f"/decision/v1/subscription/storm-{i}", bodies[i]
            )
            if status != 201:
                raise RuntimeError(f"subscribe answered {status}: {answer[:200]!r}")
            done += 1

    started = time.perf_counter()
    try:
        await asyncio.gather(*(client(conn) for conn in conns))
    finally:
        for conn in conns:
            await conn.close()
    return time.perf_counter() - started, done


def _storm_row(
    label: str, servers: list[Child], ports: list[int], args: argparse.Namespace
) -> dict[str, Any]:
    cpu = sum(cpu_seconds(s.pid) for s in servers)
    elapsed, done = asyncio.run(
        _storm(ports, args.storm, args.clients, args.policies, args.storm_seconds)
    )
    cpu = sum(cpu_seconds(s.pid) for s in servers) - cpu
    return {
        f"storm s {label}": elapsed,
        f"subscribes/s {label}": done / elapsed,
        f"made {label}": done,
        f"CPU ms/sub {label}": cpu * 1000 / max(done, 1),
    }


def _propagation(
    a: Child, port_a: int, b: Child, port_b: int, n: int, rounds: int, log: Path
) -> dict[str, Any]:
    """The ``propagation`` part: ``2x`` (half the components held by each replica) and ``1x``
    (all held by A) taking turns; the push is on A each time.
    """
    half = n // 2
    layouts: dict[str, tuple[Workers, list[tuple[int, int]]]] = {}
    with children() as started:
        for name, parts, holders in (
            (
                "2x",
                [(port_a, 0, half), (port_b, half, n - half)],
                [(port_a, half), (port_b, n - half)],
            ),
            ("1x", [(port_a, 0, half), (port_a, half, n - half)], [(port_a, n)]),
        ):
            workers = http_workers(parts, log)
            started.extend(workers.children)
            layouts[name] = (workers, holders)
        for workers, _ in layouts.values():
            workers.expect("ready")
        figures: dict[str, dict[str, list[float]]] = {
            name: {"all": [], "p50": [], "last A": [], "last B": [], "cpu A": [], "cpu B": []}
            for name in layouts
        }
        missed = dict.fromkeys(layouts, 0)
        pushed = 0
        for r in range(rounds):
            order = list(layouts) if r % 2 == 0 else list(reversed(layouts))
            for name in order:
                workers, holders = layouts[name]
                pushed += 1

                def push(value: int = pushed) -> None:
                    status, body = asyncio.run(
                        request(
                            port_a,
                            "POST",
                            "/pap/v1/policies",
                            {"policies": [policy("bench.prop", "bench.type", value)]},
                        )
                    )
                    if status != 200 or json.loads(body)["notified"] != n:
                        raise RuntimeError(f"push failed: {status} {body[:200]!r}")

                cpu_a, cpu_b = cpu_seconds(a.pid), cpu_seconds(b.pid)
                # A poll the replica refused (503) does not wait: go on without it after 5 s.
                latencies, lost = poll_round(workers, pushed, holders, push, settle=5.0)
                time.sleep(0.2)  # what each replica does after the last answer, e.g. acks
                got = figures[name]
                got["cpu A"].append((cpu_seconds(a.pid) - cpu_a) * 1000)
                got["cpu B"].append((cpu_seconds(b.pid) - cpu_b) * 1000)
                missed[name] += lost
                everyone = lost == 0 and all(x > 0 for x in latencies)
                got["all"].append(max(latencies) if everyone else float("inf"))
                got["p50"].append(pct(latencies, 0.5))
                if name == "2x":
                    got["last A"].append(max(latencies[:half]) if everyone else float("inf"))
                    got["last B"].append(max(latencies[half:]) if everyone else float("inf"))
                print(
                    f"  {name} round {r + 1}: last {max(latencies):.3f} s, p50"
                    f" {pct(latencies, 0.5):.3f} s, missed {lost}, CPU A {got['cpu A'][-1]:.0f}"
                    f" ms, B {got['cpu B'][-1]:.0f} ms",
                    file=sys.stderr,
                    flush=True,
                )
        # Stopping the components' connections while they hold nothing: no poll is cut off.
    row: dict[str, Any] = {}
    for name, got in figures.items():
        row[f"prop {name} all s"] = median(got["all"])
        row[f"prop {name} p50 s"] = median(got["p50"])
        row[f"prop {name} rounds"] = [round(x, 3) for x in got["all"]]
        row[f"prop {name} missed"] = missed[name]
        row[f"prop {name} cpu A ms"] = median(got["cpu A"])
        row[f"prop {name} cpu B ms"] = median(got["cpu B"])
    row["prop 2x last A s"] = median(figures["2x"]["last A"])
    row["prop 2x last B s"] = median(figures["2x"]["last B"])
    return row


def run(
    version: str, router: str, tree: Path, args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    name = f"pp_bench_replicas_{version}_{router}_{os.getpid()}"  # runs at once do not clash
    row: dict[str, Any] = {"version": version, "router": router, "subs": args.subs}
    pollers = args.pollers if "propagation" in args.parts else 0
    log = tmp / f"{version}-{router}"

    def seed(url: str) -> float:
        code = SEED.format(
            bench=str(tree / "bench"),
            subs=args.subs,
            policies=args.policies,
            pollers=pollers,
            url=url,
        )
        began = time.perf_counter()
        subprocess.run([PYTHON, "-c", code], check=True)
        return time.perf_counter() - began

    def profiled(env: dict[str, str], database: str) -> dict[str, str]:
        """``env``, and with ``--profile`` the file bench/_serve.py profiles this server to."""
        if not args.profile:
            return env
        path = args.profile / f"{version}-{router}-{database}.prof"
        return env | {"POLICY_PUBSUB_BENCH_PROFILE": str(path)}

    storm = "storm" in args.parts
    others = set(args.parts) - {"storm"}  # latency, propagation: on a pair of their own
    with _router(router, args.nats) as env:
        if others or (storm and "pg" in args.databases):
            try:
                url = pg_database(name)
                with children() as started:  # the first start creates the schema of this version
                    _serve(tree, url, log.with_suffix(".schema.log"), env, started)
                row["seed s"] = seed(url)
                if others:
                    with children() as started:
                        a, port_a, row["start A s"] = _serve(
                            tree, url, log.with_suffix(".a.log"), env, started
                        )
                        b, port_b, row["start B s"] = _serve(
                            tree, url, log.with_suffix(".b.log"), env, started
                        )
                        row["RSS A MB"], row["RSS B MB"] = rss_mb(a.pid), rss_mb(b.pid)
                        if "latency" in args.parts:
                            row |= asyncio.run(
                                _replica_latencies(
                                    port_a, port_b, args.pushes, _affected(args.subs)
                                )
                            )
                        if pollers:
                            try:
                                row |= _propagation(
                                    a,
                                    port_a,
                                    b,
                                    port_b,
                                    pollers,
                                    args.rounds,
                                    log.with_suffix(".clients.log"),
                                )
                            except RuntimeError as exc:  # keep the other parts' figures
                                row["error"] = f"propagation: {exc}"[:300]
                                _show_logs(tmp, f"{version}-{router}")
                        row["RSS A MB end"], row["RSS B MB end"] = rss_mb(a.pid), rss_mb(b.pid)
                if storm and "pg" in args.databases:
                    # The storm's servers start afresh: their profiles hold nothing else.
                    with children() as started:
                        a, port_a, _ = _serve(
                            tree,
                            url,
                            log.with_suffix(".storm-a.log"),
                            profiled(env, "pg-a"),
                            started,
                        )
                        b, port_b, _ = _serve(
                            tree,
                            url,
                            log.with_suffix(".storm-b.log"),
                            profiled(env, "pg-b"),
                            started,
                        )
                        row |= _storm_row("PG A+B", [a, b], [port_a, port_b], args)
            finally:
                pg_drop(name)
    if storm and "sqlite" in args.databases:
        sqlite = f"sqlite+aiosqlite:///{tmp / f'{version}-{router}.db'}"
        with _router(router, args.nats) as env:
            with children() as started:
                _serve(tree, sqlite, log.with_suffix(".sqlite-schema.log"), env, started)
            seed(sqlite)
            with children() as started:
                server, port, _ = _serve(
                    tree, sqlite, log.with_suffix(".sqlite.log"), profiled(env, "sqlite"), started
                )
                row |= _storm_row("SQLite", [server], [port], args)
    return row


def _show_logs(tmp: Path, prefix: str) -> None:
    for log in sorted(tmp.glob(f"{prefix}*.log")):
        tail = log.read_text(errors="replace")[-1500:]
        print(f"--- {log.name} ---\n{tail}", file=sys.stderr)


def _stop(_signum: int, _frame: Any) -> None:
    """SIGTERM ends the run as ^C does: the servers stop and the scratch store goes."""
    raise SystemExit(143)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--router", nargs="+", default=["embedded"], choices=["embedded", "nats"])
    parser.add_argument("--nats", default=NATS_URL, help="the NATS JetStream of --router nats")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--subs", type=int, help="default 20,000 (0 with --storm-only)")
    parser.add_argument("--policies", type=int, default=1000)
    parser.add_argument("--pushes", type=int, default=30)
    parser.add_argument("--pollers", type=int, default=2000, help="propagation: components")
    parser.add_argument("--rounds", type=int, default=5, help="propagation: rounds")
    parser.add_argument("--storm", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument(
        "--storm-seconds", type=float, default=60.0, help="stop a storm after this long"
    )
    parser.add_argument(
        "--storm-only", action="store_true", help="only the subscribe storms: --parts storm"
    )
    parser.add_argument(
        "--databases", default="pg,sqlite", help="the storms to run: pg, sqlite or both"
    )
    parser.add_argument("--profile", type=Path, help="profile the storms' servers into DIR")
    parser.add_argument("--before", default="main", help="the git ref to compare with")
    parser.add_argument("--only", choices=["before", "after"], help="run one version")
    args = parser.parse_args()
    if args.storm_only:
        args.parts = ["storm"]
    if args.subs is None:
        args.subs = 0 if args.storm_only else 20_000
    args.databases = args.databases.split(",")
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _stop)
    raise_nofile()
    head = header()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        for version in [args.only] if args.only else ["before", "after"]:
            for router in args.router:
                try:
                    rows.append(run(version, router, _tree(version, args.before, tmp), args, tmp))
                except Exception as exc:  # report, show the servers' logs and go on
                    rows.append({"version": version, "router": router, "error": str(exc)[:300]})
                    _show_logs(tmp, f"{version}-{router}")
                print(json.dumps(rows[-1]), flush=True)
    table(
        rows,
        [
            "version",
            "router",
            "subs",
            "start A s",
            "RSS A MB",
            "RSS A MB end",
            "push A ms",
            "push A/B ms",
            "push A/B p90",
            "decide B quiet ms",
            "decide B after push A ms",
            "decide after p90",
            "stale after push A",
            "error",
        ],
    )
    if "storm" in args.parts:
        table(
            rows,
            [
                "version",
                "router",
                "storm s PG A+B",
                "subscribes/s PG A+B",
                "made PG A+B",
                "CPU ms/sub PG A+B",
                "storm s SQLite",
                "subscribes/s SQLite",
                "made SQLite",
                "CPU ms/sub SQLite",
            ],
        )
    if "propagation" in args.parts:
        table(
            rows,
            [
                "version",
                "router",
                "prop 1x all s",
                "prop 2x all s",
                "prop 2x last A s",
                "prop 2x last B s",
                "prop 1x p50 s",
                "prop 2x p50 s",
                "prop 1x cpu A ms",
                "prop 1x cpu B ms",
                "prop 2x cpu A ms",
                "prop 2x cpu B ms",
                "prop 1x missed",
                "prop 2x missed",
            ],
        )
    save("replicas", head, rows)


if __name__ == "__main__":
    main()
