"""Snapshots per second out of the outbox, through the relay, into NATS JetStream or RabbitMQ;
in process.

    .venv/bin/python bench/outbox.py [--db sqlite postgres] [--subs 10000] [--sets 1000] \
        [--rounds 5] [--router nats amqp] [--nats nats://127.0.0.1:4222] \
        [--amqp-url amqp://...] [--profile relay.prof]

The store is seeded by bulk insert with ``--subs`` subscriptions, each on its own topic, in
``--sets`` distinct filter sets (``{"policy-id": ["bench.p<i % sets>"], "policy-type":
["bench.type"]}``), so one push of a ``bench.type`` policy notifies every subscriber. A
``PolicyService`` runs with the NATS router and the outbox relay as the server builds them
(``routers.from_url`` and ``OutboxRelay`` with its defaults) on a stream of its own. Each round
deploys a new version of that policy and measures from the commit (the relay's wake-up) until
the relay has deleted every snapshot of the round from the outbox, which it does only once
JetStream acknowledged them: snapshots per second, and the benchmark process's CPU time per
snapshot over the same interval (``cpu_us``, all its threads; steadier than the rate on a
shared machine). After each round the stream must hold one message per subscriber and its last
sequence must have moved by ``--subs`` (every snapshot stored, none dropped as a duplicate),
and the outbox must be empty.

The relay's process also receives the stream's headers-only RePublish of every stored message
(the wake-up of held reads), as every replica does; the baseline's connection does not
subscribe to it.

The baseline, in the same run, publishes the same messages (bodies, subjects, ``Nats-Msg-Id``
headers, captured from the relay's first round) with nats-py into a second stream configured
like the first:

- ``js.publish``: one at a time, each acknowledgement awaited;
- ``publish_async, relay batches``: ``publish_async`` for a batch as large as the relay's,
  then all its acknowledgements gathered, batch after batch (the relay's ack discipline);
- ``publish_async, all``: every message through ``publish_async`` (the client keeps at most
  4,000 unacknowledged), then every acknowledgement gathered;
- ``core publish + reply sub``: ``nc.publish`` with a reply subject, the acknowledgements
  counted by one subscription (no future per message): the least nats-py work per message.

RabbitMQ (``--router amqp``): the same service, relay and seeding with the RabbitMQ router on an
exchange of its own, on a private RabbitMQ node the benchmark starts for itself
(bench/_rabbitmq.py: its own ports, database and open-file limit; stopped and deleted at the
end), or on the broker at ``--amqp-url`` when given. ``--profile FILE`` writes a cProfile of the
timed relay rounds, timed by CPU time (``time.process_time``), not wall time. One untimed round
first makes the relay declare the ``--subs`` quorum queues; each timed round is measured as for
NATS, until the relay deleted the round's rows (every message confirmed by RabbitMQ), and at the
end every queue must hold one message per round. The baseline publishes the captured messages
(body and properties as the router sets them) with aio-pika on a confirming channel to the same
exchange, so into the same queues:

- ``publish, one at a time``: each confirm awaited before the next publish;
- ``publish, relay batches``: a batch as large as the relay's published at once, its confirms
  gathered, batch after batch (the relay's discipline).

Rates are medians over the rounds; ``vs_relay`` is a row's rate over the relay's. Streams,
exchanges and queues are deleted at the end; PostgreSQL runs in a scratch database (created,
then dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    ROOT,
    delete_nats_stream,
    header,
    median,
    nats_stream_name,
    pg_database,
    pg_drop,
    policy,
    save,
    seed,
    table,
)
from _rabbitmq import private_rabbitmq

sys.path.insert(0, str(ROOT))

import nats
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from policy_pubsub import routers
from policy_pubsub.config import Settings
from policy_pubsub.models import ToscaPolicy
from policy_pubsub.relay import OutboxRelay
from policy_pubsub.routers import OutMessage, Router
from policy_pubsub.routers.amqp import AmqpRouter
from policy_pubsub.routers.amqp_shape import amqp_message
from policy_pubsub.routers.nats import NatsRouter
from policy_pubsub.routers.nats_stream import MSG_ID_HEADER, TopicStream
from policy_pubsub.routers.nats_subjects import Subjects
from policy_pubsub.service import OutboxOutlet, PolicyService
from policy_pubsub.store import Store

PUSH_TYPE = "bench.type"


def _subscriptions(n: int, sets: int) -> list[tuple[str, str, list[dict[str, Any]]]]:
    return [
        (f"s-{i}", f"t-{i}", [{"policy-id": [f"bench.p{i % sets}"], "policy-type": [PUSH_TYPE]}])
        for i in range(n)
    ]


async def _stream_state(js: JetStreamContext, stream: str) -> tuple[int, int]:
    state = (await js.stream_info(stream)).state
    return state.messages, state.last_seq


async def _until_published(relay: OutboxRelay, target: int, timeout: float) -> None:
    """Until the relay has taken ``target`` rows out of the outbox (after their ack)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while relay.published < target:
        if loop.time() > deadline:
            raise TimeoutError("the relay did not empty the outbox in time")
        await asyncio.sleep(0.001)


class Probe:
    """Notes when a change woke the relay and keeps what the router published."""

    def __init__(self, relay: OutboxRelay, router: Router) -> None:
        self.woke: float | None = None
        self.cpu = 0.0  # the process's CPU time (all threads) at the wake-up
        self.captured: list[OutMessage] | None = None
        self.capturing: list[OutMessage] = []
        wake, publish = relay.wake, router.publish

        def timed_wake() -> None:
            if self.woke is None:
                self.woke = time.perf_counter()
                self.cpu = time.process_time()
            wake()

        async def capturing_publish(batch: Sequence[OutMessage]) -> None:
            if self.captured is None:
                self.capturing.extend(batch)
            await publish(batch)

        relay.wake = timed_wake  # type: ignore[method-assign]
        router.publish = capturing_publish  # type: ignore[method-assign]


async def _relay_rounds(
    url: str, nats_url: str, stream: str, n: int, rounds: int
) -> tuple[list[dict[str, Any]], list[OutMessage], int]:
    settings = Settings(database_url=url, router_url=nats_url, nats_stream=stream)
    store = Store(url)
    await store.open()
    router = routers.from_url(nats_url, store, settings)
    assert isinstance(router, NatsRouter)
    relay = OutboxRelay(store, router)
    service = PolicyService(store, router, OutboxOutlet(relay))
    probe = Probe(relay, router)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    rows: list[dict[str, Any]] = []
    try:
        await router.start()
        await service.start()
        relay.start()
        for r in range(rounds):
            before = relay.published
            _, last_before = await _stream_state(js, stream)
            probe.woke = None
            push = ToscaPolicy.model_validate(policy("bench.push", PUSH_TYPE, r))
            started = time.perf_counter()
            result = await service.deploy([push])
            committed = time.perf_counter()
            assert result.notified == n, (result.notified, n)
            await _until_published(relay, before + n, timeout=300)
            done = time.perf_counter()
            cpu = time.process_time() - probe.cpu
            woke = probe.woke or committed
            if probe.captured is None:
                probe.captured = list(probe.capturing)
            depth, _ = await store.outbox.stats()
            messages, last = await _stream_state(js, stream)
            assert depth == 0, f"{depth} messages left in the outbox"
            assert messages == n, f"the stream holds {messages} messages, not {n}"
            assert last - last_before == n, f"{last - last_before} stored, not {n}"
            rows.append(
                {
                    "deploy_ms": (committed - started) * 1000,
                    "relay_s": done - woke,
                    "snapshots_per_s": n / (done - woke),
                    "cpu_us": cpu / n * 1e6,
                }
            )
            print(f"  relay round {r}: {rows[-1]}", flush=True)
        batch_size = relay.batch_size
    finally:
        await relay.close()
        await router.close()
        await store.close()
        await nc.close()
    assert probe.captured is not None and len(probe.captured) == n
    return rows, probe.captured, batch_size


Items = list[tuple[str, bytes, dict[str, str]]]  # subject, body, headers
Publisher = Callable[[Client, JetStreamContext, Items], Awaitable[None]]


async def _sequential(nc: Client, js: JetStreamContext, items: Items) -> None:
    for subject, body, headers in items:
        await js.publish(subject, body, headers=headers)


def _windows(size: int) -> Publisher:
    async def publish(nc: Client, js: JetStreamContext, items: Items) -> None:
        for start in range(0, len(items), size):
            acks = [
                await js.publish_async(subject, body, headers=headers)
                for subject, body, headers in items[start : start + size]
            ]
            await asyncio.gather(*acks)

    return publish


async def _core(nc: Client, js: JetStreamContext, items: Items) -> None:
    inbox = nc.new_inbox()
    done = asyncio.get_running_loop().create_future()
    count = 0
    errors = 0

    async def on_ack(msg: Msg) -> None:
        nonlocal count, errors
        count += 1
        if b'"error"' in msg.data:
            errors += 1
        if count == len(items) and not done.done():
            done.set_result(None)

    sub = await nc.subscribe(inbox + ".*", cb=on_ack)
    try:
        for index, (subject, body, headers) in enumerate(items):
            await nc.publish(subject, body, reply=f"{inbox}.{index}", headers=headers)
        await asyncio.wait_for(done, 120)
    finally:
        await sub.unsubscribe()
    if errors:
        raise RuntimeError(f"JetStream refused {errors} messages")


async def _baseline(
    nats_url: str, captured: list[OutMessage], batch_size: int, rounds: int
) -> list[dict[str, Any]]:
    stream = nats_stream_name("RAWPB")
    topics = TopicStream(Subjects(stream), max_age=3600, duplicate_window=120, replicas=1)
    nc = await nats.connect(nats_url)
    js = nc.jetstream(timeout=30)
    ways: list[tuple[str, Publisher]] = [
        ("js.publish", _sequential),
        ("publish_async, relay batches", _windows(batch_size)),
        ("publish_async, all", _windows(len(captured))),
        ("core publish + reply sub", _core),
    ]
    rows: list[dict[str, Any]] = []
    try:
        await topics.ensure(js)
        for k, (name, way) in enumerate(ways):
            rates: list[float] = []
            cpus: list[float] = []
            for r in range(rounds):
                # Ids unique to this round, so JetStream stores every message.
                items = [
                    (
                        topics.subject_of(m),
                        m.body.encode(),
                        {MSG_ID_HEADER: f"{m.dedup_id}/{k}.{r}"},
                    )
                    for m in captured
                ]
                _, last_before = await _stream_state(js, stream)
                started, cpu = time.perf_counter(), time.process_time()
                await way(nc, js, items)
                elapsed = time.perf_counter() - started
                cpus.append((time.process_time() - cpu) / len(items) * 1e6)
                _, last = await _stream_state(js, stream)
                assert last - last_before == len(items), (name, last - last_before)
                rates.append(len(items) / elapsed)
            rows.append(
                {
                    "case": f"raw: {name}",
                    "snapshots_per_s": round(median(rates)),
                    "cpu_us": median(cpus),
                }
            )
            print(f"  baseline {name}: {[round(x) for x in rates]}", flush=True)
    finally:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(stream)
        await nc.close()
    return rows


async def _one(url: str, nats_url: str, n: int, sets: int, rounds: int) -> list[dict[str, Any]]:
    started = time.perf_counter()
    await seed(url, _subscriptions(n, sets), [policy("bench.base", "bench.other", 0)])
    seeded = time.perf_counter() - started
    stream = nats_stream_name("RELAY")
    try:
        relay_rows, captured, batch_size = await _relay_rounds(url, nats_url, stream, n, rounds)
    finally:
        await delete_nats_stream(nats_url, stream)
    baseline = await _baseline(nats_url, captured, batch_size, rounds)
    return _summary(relay_rows, captured, batch_size, seeded, n, baseline, "relay")


async def _amqp_relay_rounds(
    url: str, amqp_url: str, exchange: str, n: int, rounds: int, profile: Path | None = None
) -> tuple[list[dict[str, Any]], list[OutMessage], int]:
    settings = Settings(database_url=url, router_url=amqp_url, amqp_exchange=exchange)
    store = Store(url)
    await store.open()
    router = routers.from_url(amqp_url, store, settings)
    assert isinstance(router, AmqpRouter)
    relay = OutboxRelay(store, router)
    service = PolicyService(store, router, OutboxOutlet(relay))
    probe = Probe(relay, router)
    rows: list[dict[str, Any]] = []
    profiler = cProfile.Profile(time.process_time) if profile is not None else None
    try:
        await router.start()
        await service.start()
        relay.start()
        for r in range(-1, rounds):  # round -1: the relay declares the queues, untimed
            if r == 0 and profiler is not None:
                profiler.enable()
            before = relay.published
            probe.woke = None
            push = ToscaPolicy.model_validate(policy("bench.push", PUSH_TYPE, r))
            started = time.perf_counter()
            result = await service.deploy([push])
            committed = time.perf_counter()
            assert result.notified == n, (result.notified, n)
            await _until_published(relay, before + n, timeout=600)
            done = time.perf_counter()
            cpu = time.process_time() - probe.cpu
            woke = probe.woke or committed
            depth, _ = await store.outbox.stats()
            assert depth == 0, f"{depth} messages left in the outbox"
            if r < 0:
                probe.capturing.clear()
                print(f"  declared {n} queues and published in {done - woke:.1f} s", flush=True)
                continue
            if probe.captured is None:
                probe.captured = list(probe.capturing)
            rows.append(
                {
                    "deploy_ms": (committed - started) * 1000,
                    "relay_s": done - woke,
                    "snapshots_per_s": n / (done - woke),
                    "cpu_us": cpu / n * 1e6,
                }
            )
            print(f"  relay round {r}: {rows[-1]}", flush=True)
        if profiler is not None and profile is not None:
            profiler.disable()
            profiler.dump_stats(profile)
        batch_size = relay.batch_size
        counts = await router.queue_counts([f"s-{i}" for i in range(n)])
        depths = {c.messages for c in counts.values()}
        assert depths == {rounds + 1} and len(counts) == n, f"queue depths {depths}"
    finally:
        await relay.close()
        await router.close()
        await store.close()
    assert probe.captured is not None and len(probe.captured) == n
    return rows, probe.captured, batch_size


async def _amqp_baseline(
    amqp_url: str, exchange: str, captured: list[OutMessage], batch_size: int, rounds: int
) -> list[dict[str, Any]]:
    import aio_pika

    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel(publisher_confirms=True)
    target = await channel.get_exchange(exchange)

    async def one_at_a_time(items: list[OutMessage]) -> None:
        for m in items:
            await target.publish(amqp_message(m), routing_key=m.topic)

    async def batches(items: list[OutMessage]) -> None:
        for start in range(0, len(items), batch_size):
            await asyncio.gather(
                *(
                    target.publish(amqp_message(m), routing_key=m.topic)
                    for m in items[start : start + batch_size]
                )
            )

    ways = [("publish, one at a time", one_at_a_time), ("publish, relay batches", batches)]
    rows: list[dict[str, Any]] = []
    try:
        for name, way in ways:
            rates: list[float] = []
            cpus: list[float] = []
            for _ in range(rounds):
                started, cpu = time.perf_counter(), time.process_time()
                await way(captured)
                elapsed = time.perf_counter() - started
                cpus.append((time.process_time() - cpu) / len(captured) * 1e6)
                rates.append(len(captured) / elapsed)
            rows.append(
                {
                    "case": f"raw aio-pika: {name}",
                    "snapshots_per_s": round(median(rates)),
                    "cpu_us": median(cpus),
                }
            )
            print(f"  baseline {name}: {[round(x) for x in rates]}", flush=True)
    finally:
        await connection.close()
    return rows


async def _amqp_cleanup(amqp_url: str, exchange: str, n: int) -> None:
    import aio_pika

    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        for i in range(n):
            await channel.queue_delete(f"s-{i}")
        await channel.exchange_delete(exchange)
    finally:
        await connection.close()


async def _one_amqp(
    url: str,
    amqp_url: str,
    n: int,
    sets: int,
    rounds: int,
    profile: Path | None = None,
    private: bool = False,
) -> list[dict[str, Any]]:
    started = time.perf_counter()
    await seed(url, _subscriptions(n, sets), [policy("bench.base", "bench.other", 0)])
    seeded = time.perf_counter() - started
    exchange = f"pps-bench-{uuid.uuid4().hex[:12]}"
    try:
        relay_rows, captured, batch_size = await _amqp_relay_rounds(
            url, amqp_url, exchange, n, rounds, profile
        )
        baseline = await _amqp_baseline(amqp_url, exchange, captured, batch_size, rounds)
    finally:
        if not private:  # a private node goes with everything on it
            await _amqp_cleanup(amqp_url, exchange, n)
    return _summary(relay_rows, captured, batch_size, seeded, n, baseline, "relay to RabbitMQ")


def _summary(
    relay_rows: list[dict[str, Any]],
    captured: list[OutMessage],
    batch_size: int,
    seeded: float,
    n: int,
    baseline: list[dict[str, Any]],
    case: str,
) -> list[dict[str, Any]]:
    sizes = sorted(len(m.body) for m in captured)
    rows = [
        {
            "case": case,
            "subs": n,
            "batch": batch_size,
            "body_bytes": sizes[len(sizes) // 2],
            "deploy_ms": round(median([r["deploy_ms"] for r in relay_rows])),
            "relay_s": median([r["relay_s"] for r in relay_rows]),
            "snapshots_per_s": round(median([r["snapshots_per_s"] for r in relay_rows])),
            "cpu_us": median([r["cpu_us"] for r in relay_rows]),
            "rounds": [round(r["snapshots_per_s"]) for r in relay_rows],
            "seed_s": seeded,
        }
    ]
    for row in baseline:
        rows.append({**row, "subs": n, "batch": batch_size})
    relay_rate = float(rows[0]["snapshots_per_s"])  # type: ignore[arg-type]
    for row in rows:
        row["vs_relay"] = float(row["snapshots_per_s"]) / relay_rate  # type: ignore[arg-type]
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument(
        "--db", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"]
    )
    parser.add_argument("--subs", type=int, default=10_000)
    parser.add_argument("--sets", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--router", nargs="+", default=["nats"], choices=["nats", "amqp"])
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument(
        "--amqp-url", help="use this RabbitMQ (e.g. the shared one) instead of a private node"
    )
    parser.add_argument("--profile", type=Path, help="cProfile (CPU time) of the relay rounds")
    args = parser.parse_args()
    head = header()
    rows = []
    for router in args.router:
        for db in args.db:
            with tempfile.TemporaryDirectory(prefix="bench-outbox-") as tmp:
                if db == "sqlite":
                    url = f"sqlite+aiosqlite:///{Path(tmp) / 'outbox.db'}"
                else:
                    url = pg_database("pp_bench_outbox")
                try:
                    if router == "nats":
                        found = await _one(url, args.nats, args.subs, args.sets, args.rounds)
                    elif args.amqp_url:
                        found = await _one_amqp(
                            url, args.amqp_url, args.subs, args.sets, args.rounds, args.profile
                        )
                    else:
                        with private_rabbitmq(Path(tmp) / "rabbitmq.log") as amqp_url:
                            found = await _one_amqp(
                                url, amqp_url, args.subs, args.sets, args.rounds, args.profile, True
                            )
                finally:
                    if db == "postgres":
                        pg_drop("pp_bench_outbox")
            for row in found:
                rows.append({"db": db, **row})
    table(
        rows,
        [
            "db",
            "case",
            "subs",
            "batch",
            "body_bytes",
            "deploy_ms",
            "relay_s",
            "snapshots_per_s",
            "vs_relay",
            "cpu_us",
        ],
    )
    save("outbox", head, rows)


if __name__ == "__main__":
    asyncio.run(main())
