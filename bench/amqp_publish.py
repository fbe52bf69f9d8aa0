"""The RabbitMQ router's publish alone, in process, beside raw aio-pika: CPU per message.

    .venv/bin/python bench/amqp_publish.py [--n 1000] [--rounds 3] [--amqp-url amqp://...] \
        [--profile publish.prof]

On a private RabbitMQ node (bench/_rabbitmq.py) unless ``--amqp-url`` is given. One untimed
``AmqpRouter.publish`` of ``--n`` snapshots declares ``--n`` quorum queues (one per subscriber,
each on its own topic); then each round publishes a batch of ``--n`` new snapshots, one per
queue, and records the process's CPU time per message (``time.process_time``, steadier than
rates on a shared machine) and the rate. The baseline publishes the same batches with
aio-pika on a confirming channel, all at once with their confirms gathered (the way the raw
rows of bench/outbox.py do). ``--profile`` writes a cProfile (CPU time) of one more router
batch, outside the timed rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, header, median, save, table
from _rabbitmq import private_rabbitmq

sys.path.insert(0, str(ROOT))

import aio_pika

from policy_pubsub.routers import OutMessage
from policy_pubsub.routers.amqp import AmqpRouter
from policy_pubsub.routers.amqp_shape import amqp_message
from policy_pubsub.store import Store

EXCHANGE = "pps-bench-publish"


def _batch(n: int, revision: int) -> list[OutMessage]:
    pad = "y" * 400
    return [
        OutMessage(
            f"t-{i}",
            f'{{"subscriber_id":"s-{i}","revision":{revision},"policies":{{"p":"{pad}"}}}}',
            key=f"s-{i}",
            revision=revision,
            dedup_id=f"s-{i}@{revision}",
        )
        for i in range(n)
    ]


async def _run(url: str, n: int, rounds: int, profile: Path | None) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp:
        store = Store(f"sqlite+aiosqlite:///{Path(tmp) / 'store.db'}")
        await store.open()
        router = AmqpRouter(
            url,
            store,
            exchange=EXCHANGE,
            retention_seconds=3600,
            queue_max_length=100,
            max_message_bytes=1 << 20,
            timeout=120,
        )
        try:
            await router.start()
            started = time.perf_counter()
            await router.publish(_batch(n, 0))
            print(f"  declared {n} queues in {time.perf_counter() - started:.1f} s", flush=True)
            router_rounds: list[tuple[float, float]] = []
            for r in range(1, rounds + 1):
                batch = _batch(n, r)
                with _measured(router_rounds, n):
                    await router.publish(batch)
            if profile is not None:
                batch = _batch(n, rounds + 1)
                profiler = cProfile.Profile(time.process_time)
                profiler.enable()
                await router.publish(batch)
                profiler.disable()
                profiler.dump_stats(profile)
        finally:
            await router.close()
            await store.close()
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EXCHANGE)
        raw_rounds: list[tuple[float, float]] = []
        for r in range(rounds + 2, 2 * rounds + 2):
            batch = _batch(n, r)
            with _measured(raw_rounds, n):
                await asyncio.gather(
                    *(exchange.publish(amqp_message(m), routing_key=m.topic) for m in batch)
                )
    finally:
        await connection.close()
    return [
        _row("router publish", router_rounds, n),
        _row("raw aio-pika, confirms gathered", raw_rounds, n),
    ]


@contextlib.contextmanager
def _measured(rounds: list[tuple[float, float]], n: int) -> Iterator[None]:
    cpu, wall = time.process_time(), time.perf_counter()
    yield
    rounds.append(((time.process_time() - cpu) / n * 1e6, n / (time.perf_counter() - wall)))
    print(f"  {rounds[-1][0]:.0f} us/message, {rounds[-1][1]:.0f} messages/s", flush=True)


def _row(case: str, rounds: list[tuple[float, float]], n: int) -> dict[str, Any]:
    return {
        "case": case,
        "n": n,
        "cpu_us": median([cpu for cpu, _ in rounds]),
        "messages_per_s": round(median([rate for _, rate in rounds])),
        "rounds_cpu_us": [round(cpu) for cpu, _ in rounds],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--amqp-url", help="use this RabbitMQ instead of a private node")
    parser.add_argument("--profile", type=Path, help="cProfile (CPU time) of one router batch")
    args = parser.parse_args()
    head = header()
    if args.amqp_url:
        rows = asyncio.run(_run(args.amqp_url, args.n, args.rounds, args.profile))
    else:
        with private_rabbitmq() as url:
            rows = asyncio.run(_run(url, args.n, args.rounds, args.profile))
    table(rows, ["case", "n", "cpu_us", "messages_per_s", "rounds_cpu_us"])
    save("amqp_publish", head, rows)


if __name__ == "__main__":
    main()
