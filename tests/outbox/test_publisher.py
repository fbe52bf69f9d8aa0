"""The NATS router's pipelined publisher: how it reads JetStream's acknowledgements, and
several publish calls sharing one connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from policy_pubsub.exceptions import RouterUnavailable
from policy_pubsub.routers.nats import NatsRouter
from policy_pubsub.routers.nats_stream import _refusal, _Window
from tests.outbox.conftest import snapshot
from tests.routers.test_nats import _stream_info, delete_stream, open_nats_router

NATS_URL = "nats://127.0.0.1:4222"


@pytest.mark.parametrize(
    "answer",
    [
        b'{"stream":"S","seq":1}',
        b'{"stream":"S","seq":7,"duplicate":true}',
        b'{"stream":"error","seq":3}',
        b'{"stream":"S","domain":"hub","seq":2}',
        b'{ "seq": 4, "stream": "S" }',
    ],
)
def test_acknowledgements_that_mean_stored(answer: bytes) -> None:
    """A stored message, or a duplicate JetStream already holds, is a success."""
    assert _refusal(answer) is None


@pytest.mark.parametrize(
    "answer",
    [
        b'{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}',
        b'{"stream":"S","seq":0,"error":{"code":400,"description":"bad"}}',
        b"",  # no responders: no stream captures the subject
        b"not json",
        b"[]",
        b'{"stream":"S"}',
    ],
)
def test_acknowledgements_that_mean_refused(answer: bytes) -> None:
    assert _refusal(answer) is not None


async def test_a_window_completes_on_its_last_acknowledgement_or_its_first_refusal() -> None:
    loop = asyncio.get_running_loop()
    window = _Window(3, loop.create_future())
    window.answer(1, b'{"stream":"S","seq":2}')
    window.answer(1, b'{"stream":"S","seq":2}')  # the same answer twice counts once
    window.answer(7, b'{"stream":"S","seq":9}')  # not one of ours
    assert (window.done.done(), window.missing) == (False, 2)
    window.answer(0, b'{"stream":"S","seq":1}')
    window.answer(2, b'{"stream":"S","seq":3}')
    assert (window.done.done(), window.missing, window.failure) == (True, 0, None)

    refused = _Window(3, loop.create_future())
    refused.answer(0, b'{"stream":"S","seq":1}')
    refused.answer(1, b'{"error":{"code":503,"description":"no space"}}')
    assert refused.done.done()
    assert refused.failure is not None and "no space" in refused.failure
    refused.answer(2, b'{"stream":"S","seq":3}')  # after the refusal: changes nothing
    assert refused.missing == 2


@pytest.fixture
async def shared_router(tmp_path: Path) -> AsyncIterator[NatsRouter]:
    router, store = await open_nats_router(tmp_path)
    try:
        yield router
    finally:
        await router.close()
        await store.close()


async def test_publish_calls_at_once_each_return_when_their_own_messages_are_stored(
    shared_router: NatsRouter,
) -> None:
    """Three publish calls interleaved on one connection (the relay, and POST /events) each
    return once JetStream stored their messages; all 3,000 are in the stream.
    """
    batches = [[snapshot(1000 * b + i, 1) for i in range(1000)] for b in range(3)]
    await asyncio.gather(*(shared_router.publish(batch) for batch in batches))
    info = await _stream_info(NATS_URL, shared_router.stream)
    assert (info.state.messages, info.state.last_seq) == (3000, 3000)


async def test_a_publish_no_stream_takes_is_refused_at_once(tmp_path: Path) -> None:
    """With the stream gone, the first answer (no responders) fails the call at once, long
    before the no-progress timeout.
    """
    router, store = await open_nats_router(tmp_path, request_timeout=30.0)
    try:
        await delete_stream(NATS_URL, router.stream)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(RouterUnavailable, match="no responders"):
            await router.publish([snapshot(i, 1) for i in range(100)])
        assert loop.time() - started < 5
    finally:
        await router.close()
        await store.close()
