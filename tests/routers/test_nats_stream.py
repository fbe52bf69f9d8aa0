"""The JetStream side of the NATS router (routers/nats_stream.py): the stream's settings,
and the pipelined publisher: how it reads JetStream's acknowledgements, and several publish
calls sharing one connection.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nats
import pytest

from policy_pubsub.exceptions import MessageRefused, RouterUnavailable
from policy_pubsub.routers import OutMessage
from policy_pubsub.routers.nats import HEADER_ALLOWANCE, NatsRouter
from policy_pubsub.routers.nats_stream import _refusal, _Window
from tests.nats_server import NATS_URL, delete_stream, open_nats_router, stream_info
from tests.relay.helpers import snapshot


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


async def test_publish_calls_at_once_each_return_when_their_own_messages_are_stored(
    nats_router: NatsRouter,
) -> None:
    """Three publish calls interleaved on one connection (the relay, and POST /events) each
    return once JetStream stored their messages; all 3,000 are in the stream.
    """
    batches = [[snapshot(1000 * b + i, 1) for i in range(1000)] for b in range(3)]
    await asyncio.gather(*(nats_router.publish(batch) for batch in batches))
    info = await stream_info(NATS_URL, nats_router.stream)
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


def test_only_an_oversized_message_is_a_permanent_refusal() -> None:
    """JetStream's "message size exceeds maximum" (10054) is permanent; storage limits and
    the like are not.
    """
    oversize = b'{"error":{"code":400,"err_code":10054,"description":"message size exceeds"}}'
    full = b'{"error":{"code":503,"err_code":10077,"description":"maximum bytes exceeded"}}'
    assert _refusal(oversize) == (f"JetStream refused a message: {_error(oversize)}", True)
    found = _refusal(full)
    assert found is not None and not found[1]


def _error(answer: bytes) -> object:
    return json.loads(answer)["error"]


async def test_a_message_over_max_payload_is_refused_for_good_after_the_ones_before(
    nats_router: NatsRouter,
) -> None:
    """A message larger than the server's max_payload is ``MessageRefused`` for that very
    message, once the messages before it are stored; none after it is sent.
    """
    size = nats_router.max_message_bytes + HEADER_ALLOWANCE + 1  # the server's max_payload + 1
    big = OutMessage("t0", "x" * size, key="big", revision=1)
    batch = [snapshot(1, 1), big, snapshot(2, 1)]
    with pytest.raises(MessageRefused, match="max_payload") as refused:
        await nats_router.publish(batch)
    assert refused.value.refused is big
    info = await stream_info(NATS_URL, nats_router.stream)
    assert info.state.messages == 1


async def test_a_message_over_the_streams_max_msg_size_is_refused_for_good(
    nats_router: NatsRouter,
) -> None:
    """JetStream refusing a message for the stream's own size limit (an API error, 10054) is
    ``MessageRefused`` for that message, the ones before it stored.
    """
    nc = await nats.connect(NATS_URL)
    try:
        js = nc.jetstream()
        config = (await js.stream_info(nats_router.stream)).config
        config.max_msg_size = 2000
        await js.update_stream(config)
    finally:
        await nc.close()
    big = OutMessage("t0", "y" * 4000, key="big", revision=1)
    batch = [snapshot(1, 1), snapshot(2, 1), big]
    with pytest.raises(MessageRefused, match="10054") as refused:
        await nats_router.publish(batch)
    assert refused.value.refused is big
    info = await stream_info(NATS_URL, nats_router.stream)
    assert info.state.messages == 2


# -- the stream -----------------------------------------------------------------------------


async def test_stream_has_the_configured_limits(tmp_path: Path) -> None:
    """The stream keeps one message per subject, for max_age, and de-duplicates by msg id."""
    router, store = await open_nats_router(tmp_path, max_age_seconds=1234)
    try:
        info = await stream_info(NATS_URL, router.stream)
        assert info.config.max_msgs_per_subject == 1
        assert info.config.max_age == 1234
        assert info.config.duplicate_window == 120
        assert info.config.allow_direct
        assert info.config.republish is not None and info.config.republish.headers_only
    finally:
        await router.close()
        await store.close()


async def test_start_updates_an_existing_stream(tmp_path: Path) -> None:
    """A server started with another max_age brings the existing stream to it."""
    first, store = await open_nats_router(tmp_path, max_age_seconds=100)
    stream = first.stream
    second = NatsRouter(
        NATS_URL, store, stream=stream, max_age_seconds=200, position_flush_seconds=0
    )
    try:
        await second.start()
        assert (await stream_info(NATS_URL, stream)).config.max_age == 200
    finally:
        await second.close()
        await first.close()
        await store.close()
