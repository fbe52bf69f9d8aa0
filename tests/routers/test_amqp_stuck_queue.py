"""A queue RabbitMQ never confirms messages to (a quorum queue left without a leader after an
unclean restart, say) does not hold up the other queues for ever: after the set number of
attempts its message is refused, and delivery to the others goes on.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import aiormq
import pytest

from policy_pubsub.exceptions import MessageRefused, RouterUnavailable
from policy_pubsub.routers import OutMessage
from tests.rabbitmq import AMQP_URL, open_amqp_router


async def test_a_queue_that_never_confirms_is_refused_after_its_attempts_and_others_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = uuid.uuid4().hex[:8]
    stuck = OutMessage(f"stuck-{tag}", '{"n": 1}', key=f"stuck-{tag}", revision=1)
    fine = [
        OutMessage(f"fine-{tag}", f'{{"n": {n}}}', key=f"fine-{tag}", revision=n) for n in (1, 2, 3)
    ]
    publish = aiormq.Channel.basic_publish

    async def never_confirmed(self: aiormq.Channel, body: bytes, **options: Any) -> Any:
        if options.get("routing_key") == stuck.topic:
            await asyncio.Event().wait()  # RabbitMQ took it and never answers
        return await publish(self, body, **options)

    monkeypatch.setattr(aiormq.Channel, "basic_publish", never_confirmed)
    router, store = await open_amqp_router(tmp_path, timeout=0.5, unconfirmed_attempts=2)
    try:
        with pytest.raises(RouterUnavailable, match="attempt 1 of 2"):
            await router.publish([stuck, fine[0]])
        with pytest.raises(MessageRefused) as refused:
            await router.publish([stuck, fine[1]])
        assert refused.value.refused is stuck
        assert "did not confirm" in refused.value.reason
        await router.publish([fine[2]])  # the relay goes on with what followed it
        # Still stuck: the queue's next message is refused at its first timeout.
        later = OutMessage(stuck.topic, '{"n": 2}', key=stuck.key, revision=2)
        with pytest.raises(MessageRefused) as refused:
            await router.publish([later])
        assert refused.value.refused is later
        counts = await router.queue_counts([fine[0].key or ""])
        assert counts[fine[0].key or ""].messages == 3  # each attempt's copy, then the next
    finally:
        await router.close()
        await store.close()


async def test_no_confirm_from_a_broker_that_does_not_answer_refuses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = uuid.uuid4().hex[:8]
    messages = [OutMessage(f"t-{tag}", "{}", key=f"q{n}-{tag}", revision=1) for n in (1, 2)]
    router, store = await open_amqp_router(tmp_path, timeout=0.5, unconfirmed_attempts=1)
    router.extra_queues.update(m.key or "" for m in messages)

    async def silent(self: aiormq.Channel, *args: Any, **options: Any) -> Any:
        await asyncio.Event().wait()  # a blocked connection: nothing answers

    monkeypatch.setattr(aiormq.Channel, "basic_publish", silent)
    monkeypatch.setattr(aiormq.Channel, "exchange_declare", silent)
    try:
        for _ in range(2):
            with pytest.raises(RouterUnavailable, match="no answer"):
                await router.publish(messages)
    finally:
        monkeypatch.undo()
        await router.close()
        await store.close()


async def test_queue_type_classic_declares_classic_queues(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    message = OutMessage(f"t-{tag}", "{}", key=f"classic-{tag}", revision=1)
    router, store = await open_amqp_router(tmp_path, queue_type="classic")
    try:
        await router.publish([message])
        connection = await aio_pika.connect(AMQP_URL, timeout=5)
        try:
            channel = await connection.channel()
            for queue_type, equivalent in (("classic", True), ("quorum", False)):
                arguments = {**router._shape.arguments(), "x-queue-type": queue_type}
                if channel.is_closed:
                    channel = await connection.channel()
                try:
                    await channel.declare_queue(
                        message.key or "", durable=True, arguments=arguments
                    )
                except aiormq.exceptions.ChannelPreconditionFailed:
                    assert not equivalent, f"not a {queue_type} queue"
                else:
                    assert equivalent, f"a {queue_type} queue"
        finally:
            await connection.close()
    finally:
        await router.close()
        await store.close()
