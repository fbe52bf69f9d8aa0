"""Decision API: requests per second for a 10-policy answer, against a bare Starlette endpoint.

    .venv/bin/python bench/decision.py [--seconds 10] [--connections 32] [--threads 1]

``POST /decision/v1`` on policy-pubsub (bench/_serve.py, the server ``serve`` runs, SQLite)
holding 10 policies of one type, asked for that type; and ``POST /decision/v1`` on
bench/_bare.py, which parses the body and answers the same 10 policies with Starlette's
JSONResponse: the ceiling, on the same uvicorn. Load from ``wrk`` (apt-get install wrk);
client and server share the machine's cores. ``cpu_of_ceiling`` compares the two servers' CPU
per request (bare / policy-pubsub), which a loaded machine disturbs less than req/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BENCH,
    PYTHON,
    Child,
    Conn,
    children,
    cpu_seconds,
    free_port,
    header,
    policy,
    save,
    seed,
    serve_policy_pubsub,
    table,
    wait_http,
)

REQUEST = {
    "ONAPName": "DCAE",
    "ONAPComponent": "tca",
    "ONAPInstance": "bench",
    "action": "configure",
    "resource": {"policy-type": ["bench.dec"]},
}


def _wrk(
    port: int, seconds: int, connections: int, threads: int, tmp: Path, pid: int
) -> dict[str, Any]:
    script = tmp / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps(REQUEST))}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    cpu = cpu_seconds(pid)
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/decision/v1",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    cpu = cpu_seconds(pid) - cpu
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1, "s": 1000}
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {
        "rps": rps,
        # The server's CPU per request: what a loaded machine changes least.
        "cpu_us_per_req": cpu / requests * 1e6 if requests else float("nan"),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan"),
    }


async def _check(port: int) -> int:
    conn = await Conn.open(port)
    try:
        status, body = await conn.request("POST", "/decision/v1", json.dumps(REQUEST).encode())
    finally:
        await conn.close()
    if status != 200:
        raise RuntimeError(f"decision failed: {status} {body[:200]!r}")
    return len(json.loads(body)["policies"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--log-level", default="info", help="policy-pubsub's (default info)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install -y wrk)")
    head = header()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-decision-") as name, children() as started:
        tmp = Path(name)
        url = f"sqlite+aiosqlite:///{tmp / 'decision.db'}"
        asyncio.run(seed(url, [], [policy(f"bench.p{i}", "bench.dec", i) for i in range(10)]))
        port = free_port()
        server = serve_policy_pubsub(port, url, tmp / "server.log", log_level=args.log_level)
        started.append(server)
        policies = asyncio.run(_check(port))
        rows.append(
            {
                "system": "pubsub",
                "policies": policies,
                **_wrk(port, args.seconds, args.connections, args.threads, tmp, server.pid),
            }
        )
        started.pop().stop()
        bare_port = free_port()
        bare_argv = [PYTHON, str(BENCH / "_bare.py"), "--port", str(bare_port)]
        bare = Child(bare_argv, log=tmp / "bare.log")
        started.append(bare)
        wait_http(bare_port, "/healthcheck")
        policies = asyncio.run(_check(bare_port))
        rows.append(
            {
                "system": "bare",
                "policies": policies,
                **_wrk(bare_port, args.seconds, args.connections, args.threads, tmp, bare.pid),
            }
        )
    rows[0]["of_ceiling"] = rows[0]["rps"] / rows[1]["rps"]
    rows[0]["cpu_of_ceiling"] = rows[1]["cpu_us_per_req"] / rows[0]["cpu_us_per_req"]
    for row in rows:
        print(json.dumps(row))
    table(
        rows,
        [
            "system",
            "policies",
            "rps",
            "p99_ms",
            "non_2xx",
            "cpu_us_per_req",
            "of_ceiling",
            "cpu_of_ceiling",
        ],
    )
    save("decision", head, rows)


if __name__ == "__main__":
    main()
