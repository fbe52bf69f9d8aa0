"""The DMaaP router: topics live in an external DMaaP Message Router, reached over HTTP(S).

Chosen by ``dmaap+http://host:port`` or ``dmaap+https://user:pass@host:port[/prefix]``. The
server writes snapshots to its outbox and the relay hands them to :meth:`DmaapRouter.publish`;
components long-poll the MR directly (the SDK's ``router_url``).

Publishing. The messages go in the batch's order, as JSON arrays in ``POST /events/{topic}``,
one POST per run of consecutive messages with the same topic and key. The partition (the
subscriber id, so one subscriber's snapshots keep their order on a Kafka backed MR) travels
as the ``partitionKey`` query parameter. The ONAP MR takes that parameter as the partition of every
message in the request that has no ``cambria.partition`` field of its own
(``EventsRestService.pushEvents`` -> ``CambriaJsonStreamReader``). We do not add a
``cambria.partition`` field: the MR stores each object whole, field included, so every
consumer would read a changed snapshot. The relay hands over one snapshot per subscriber and
topic, so a batch takes about one POST per subscriber. A permanent 4xx (the MR refuses that
message, e.g. 413) is ``MessageRefused``: the messages before it were published, none after.

Reading. ``GET /events/{topic}/{group}/{consumer}`` is a long-poll on the MR, and the MR
moves the group past the messages when it answers: acknowledging is a no-op here, and a
delivery that is never acknowledged is lost to the group (the contract's "a read that
delivers nothing consumes nothing" holds only for a read cancelled before the MR answered,
which is what ``gone`` and :meth:`drain` do).

Stats. Our own MR answers ``GET /topics/{topic}`` with message counts and consumer groups; a
real DMaaP MR answers only name, owner and ACLs, so its stats have no messages and no groups.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx
import orjson

from policy_pubsub import constants
from policy_pubsub.config import Settings
from policy_pubsub.exceptions import MessageRefused, NotFound, RouterUnavailable
from policy_pubsub.repeats import RepeatedWarnings
from policy_pubsub.routers.base import Delivery, EmptyDelivery, GroupStats, Router, TopicStats
from policy_pubsub.routers.holding import HeldReads
from policy_pubsub.routers.messages import OutMessage

log = logging.getLogger(__name__)

SCHEMES = {"dmaap+http": "http", "dmaap+https": "https"}
PARTITION_PARAM = "partitionKey"
DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_MAX_REQUEST_BYTES = 1_000_000
# 4xx answers to a publish that a retry of the same message may get past.
TRANSIENT_4XX = frozenset({401, 407, 408, 429})


class ConsumedDelivery(Delivery):
    """Messages the MR answered a poll with. The MR counted them consumed when it answered,
    so :meth:`ack` and :meth:`release` do nothing: what the caller fails to deliver is lost to
    the group (the consumer's resync recovers it).
    """

    def __init__(self, messages: list[str]) -> None:
        self.messages = messages

    async def ack(self) -> None:
        return None

    async def release(self) -> None:
        return None


class DmaapRouter(Router):
    """A DMaaP Message Router reached over HTTP(S), with basic auth and TLS options."""

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        insecure: bool = False,
        create_topics: bool = False,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        poll_margin: float | None = None,
        partition_count: int = 1,
        replication_count: int = 1,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        max_message_bytes: int = constants.DEFAULT_MAX_MESSAGE_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``url`` is the router URL; its userinfo wins over ``username``/``password``.
        ``timeout`` bounds connecting, writing and reading one call; a long-poll may take its
        hold time plus ``poll_margin`` (default ``timeout``). A POST carries at most
        ``max_request_bytes`` of messages (at least one message). ``max_message_bytes`` is the
        largest message the MR takes, as its operator configured it.
        """
        base_url, url_user, url_password = parse_url(url)
        if url_user is not None:
            username, password = url_user, url_password
        self.url = base_url  # without credentials, for logs
        # A refusal the relay retries (401, 407, 408, 429) or a reader repeats: one ERROR per
        # action and status, then a summary a minute while it lasts.
        self._refusals = RepeatedWarnings(log, level=logging.ERROR)
        self._timeout = timeout
        self._poll_margin = timeout if poll_margin is None else poll_margin
        self._create_topics = create_topics
        self._partition_count = partition_count
        self._replication_count = replication_count
        self._max_request_bytes = max_request_bytes
        self._max_message_bytes = max_message_bytes
        https = base_url.startswith("https:")
        if username is not None and not https:
            log.warning("sending message router credentials over plain http to %s", base_url)
        self._client = httpx.AsyncClient(
            base_url=base_url,
            auth=None if username is None else httpx.BasicAuth(username, password or ""),
            verify=_verify(ca_file, insecure, https),
            timeout=httpx.Timeout(timeout),
            # Every held long-poll holds a connection; a pool cap would queue polls.
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
            transport=transport,
            headers={"accept": "application/json"},
        )
        self._held = HeldReads()
        self._known_topics: set[str] = set()

    @property
    def max_message_bytes(self) -> int:
        """The setting ``dmaap_max_message_bytes``: the MR does not say its own."""
        return self._max_message_bytes

    @property
    def held_reads(self) -> int:
        """Reads with a poll on the MR in flight."""
        return self._held.count

    @classmethod
    def from_settings(
        cls, url: str, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> DmaapRouter:
        """The router the server's settings describe (``dmaap_*`` fields)."""
        password = settings.dmaap_password
        return cls(
            url,
            username=settings.dmaap_username,
            password=None if password is None else password.get_secret_value(),
            ca_file=settings.dmaap_ca_file,
            insecure=settings.dmaap_insecure,
            create_topics=settings.dmaap_create_topics,
            timeout=settings.dmaap_timeout_seconds,
            max_message_bytes=settings.dmaap_max_message_bytes,
            transport=transport,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Check the MR once; an MR that is down does not stop the server (the relay retries)."""
        try:
            await self.ping()
        except RouterUnavailable as exc:
            log.warning("message router not reachable yet, publishing will retry: %s", exc)

    async def drain(self) -> None:
        self._held.drain()

    async def close(self) -> None:
        await self.drain()
        await self._client.aclose()

    # -- writing -----------------------------------------------------------------------------

    async def publish(self, batch: Sequence[OutMessage]) -> None:
        """POST the messages in the batch's order, one request per run of consecutive
        messages with one topic and one partition key. A failure part way leaves the earlier
        requests published: the relay's retry publishes them again, and consumers drop the
        duplicate revisions. A permanent 4xx (see :func:`permanent`) is ``MessageRefused``
        for the message the MR refused; in a request of several messages, each is sent again
        alone to tell which one.
        """
        for (topic, key), run in itertools.groupby(batch, key=lambda m: (m.topic, m.key)):
            if self._create_topics and topic not in self._known_topics:
                await self.ensure_topic(topic)
            for messages in _requests(list(run), self._max_request_bytes):
                response = await self._post(topic, key, messages)
                if response is None:
                    continue
                if len(messages) == 1:
                    raise MessageRefused(messages[0], _refusal(response))
                for message in messages:
                    alone = await self._post(topic, key, [message])
                    if alone is not None:
                        raise MessageRefused(message, _refusal(alone))

    async def _post(
        self, topic: str, key: str | None, messages: list[OutMessage]
    ) -> httpx.Response | None:
        """POST one request; None when the MR took every message, the MR's answer when it
        refused them for good (see :func:`permanent`); ``RouterUnavailable`` otherwise.
        """
        # The bodies are JSON objects already: joined, not parsed and re-encoded. No newlines:
        # the ONAP MR's reader ends an array at a newline between objects.
        content = ("[" + ",".join(m.body for m in messages) + "]").encode()
        response = await self._call(
            "POST",
            f"/events/{_segment(topic)}",
            content=content,
            params=None if key is None else {PARTITION_PARAM: key},
            headers={"content-type": "application/json"},
        )
        if permanent(response.status_code):
            return response
        if not response.is_success:
            raise self._refused(response, f"publish to topic {topic!r}")
        count = _count(response)
        if count is not None and count != len(messages):
            raise RouterUnavailable(
                f"message router took {count} of {len(messages)} messages for topic {topic!r}"
            )
        return None

    async def ensure_topic(self, topic: str) -> None:
        """Create the topic on the MR (``POST /topics/create``); one that exists is fine."""
        response = await self._call(
            "POST",
            "/topics/create",
            json={
                "topicName": topic,
                "topicDescription": "policy-pubsub snapshots",
                "partitionCount": self._partition_count,
                "replicationCount": self._replication_count,
                "transactionEnabled": False,
            },
        )
        if not (response.is_success or response.status_code == 409):
            raise self._refused(response, f"create topic {topic!r}")
        self._known_topics.add(topic)

    # -- reading -----------------------------------------------------------------------------

    async def read(
        self,
        topic: str,
        group: str,
        consumer: str,
        *,
        timeout: float,
        limit: int,
        gone: asyncio.Future[None] | None = None,
    ) -> Delivery:
        """Poll the MR once. When ``gone`` completes or the router drains first, the poll is
        cancelled (its connection closed), so the MR consumes nothing; what the MR answered
        is consumed already (see :class:`ConsumedDelivery`).
        """
        if self._held.over(None, gone):
            return EmptyDelivery()
        path = f"/events/{_segment(topic)}/{_segment(group)}/{_segment(consumer)}"
        params = {"timeout": max(0, round(timeout * 1000)), "limit": limit}
        poll_timeout = httpx.Timeout(self._timeout, read=timeout + self._poll_margin)
        poll = asyncio.create_task(self._call("GET", path, params=params, timeout=poll_timeout))
        try:
            await self._held.hold(None, self._held.waiter(), gone=gone, until=poll)
        finally:
            if not poll.done():
                poll.cancel()
                await asyncio.wait({poll})
            if not poll.cancelled():
                poll.exception()  # retrieved here, raised below unless we are cancelled
        if poll.cancelled():
            return EmptyDelivery()
        response = poll.result()  # raises RouterUnavailable
        if response.status_code == 404:
            raise NotFound("topic", topic)
        if not response.is_success:
            raise self._refused(response, f"read topic {topic!r}")
        items = _json(response)
        if not isinstance(items, list):
            raise RouterUnavailable(f"message router answered a read of {topic!r} with no array")
        if not items:
            return EmptyDelivery()
        return ConsumedDelivery(
            [item if isinstance(item, str) else orjson.dumps(item).decode() for item in items]
        )

    # -- topics ------------------------------------------------------------------------------

    async def topics(self) -> list[str]:
        response = await self._call("GET", "/topics")
        if not response.is_success:
            raise self._refused(response, "list topics")
        data = _json(response)
        listed = data.get("topics") if isinstance(data, dict) else None
        if not isinstance(listed, list):
            raise RouterUnavailable("message router answered GET /topics without a topic list")
        # /topics lists names; /topics/listAll-style answers list objects with topicName.
        names = [t if isinstance(t, str) else str(t.get("topicName")) for t in listed]
        return sorted(names)

    async def stats(self, topic: str) -> TopicStats:
        """Our MR's ``GET /topics/{topic}`` mapped back. A real DMaaP MR reports no messages,
        times or groups: those stay 0, None and empty. Without ``oldest_unread_at`` in the
        answer, it is estimated as the last publish time when every group lags (or there is
        no group but messages): never earlier than the true one, so a staleness check using
        it may flag late but never wrongly.
        """
        response = await self._call("GET", f"/topics/{_segment(topic)}")
        if response.status_code == 404:
            raise NotFound("topic", topic)
        if not response.is_success:
            raise self._refused(response, f"describe topic {topic!r}")
        data = _json(response)
        if not isinstance(data, dict):
            raise RouterUnavailable(f"message router described topic {topic!r} with no object")
        groups = [
            GroupStats(
                name=str(g.get("name")),
                position=_int(g.get("position")),
                lag=_int(g.get("lag")),
                last_consumed_at=_epoch_ms(g.get("last_consumed_at")),
            )
            for g in data.get("consumer_groups") or []
            if isinstance(g, dict)
        ]
        messages = _int(data.get("messages"))
        last_published_at = _epoch_ms(data.get("last_published_at"))
        if "oldest_unread_at" in data:
            oldest = _epoch_ms(data["oldest_unread_at"])
        elif groups:
            oldest = last_published_at if min(g.lag for g in groups) > 0 else None
        else:
            oldest = last_published_at if messages > 0 else None
        return TopicStats(
            name=str(data.get("name") or topic),
            messages=messages,
            last_published_at=last_published_at,
            oldest_unread_at=oldest,
            consumer_groups=groups,
        )

    async def ping(self) -> None:
        response = await self._call("GET", "/topics")
        if not response.is_success:
            raise self._refused(response, "list topics")

    # -- HTTP --------------------------------------------------------------------------------

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise RouterUnavailable(
                f"message router {self.url} unreachable: {type(exc).__name__}: {exc}"
            ) from exc

    def _refused(self, response: httpx.Response, action: str) -> RouterUnavailable:
        """The error for an answer other than 2xx; a 4xx is logged (once, then summarised while
        it repeats), as retrying will not help until someone changes the request, the
        credentials or the MR.
        """
        status, message = response.status_code, _mr_message(response)
        if status < 500:
            self._refusals.warn(
                (action, status),
                "message router %s refused to %s: %s %s",
                self.url,
                action,
                status,
                message,
            )
        return RouterUnavailable(f"message router answered {status} to {action}: {message}")


def parse_url(url: str) -> tuple[str, str | None, str | None]:
    """``dmaap+https://user:pass@host:port/prefix`` -> (``https://host:port/prefix``, user,
    password), the userinfo percent-decoded.
    """
    parts = urlsplit(url)
    scheme = SCHEMES.get(parts.scheme)
    if scheme is None or not parts.hostname:
        raise ValueError(f"not a DMaaP router URL (dmaap+http(s)://host:port): {parts.scheme}://")
    if parts.query or parts.fragment:
        raise ValueError("a DMaaP router URL takes no query or fragment")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    base_url = urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", ""))
    username = None if parts.username is None else unquote(parts.username)
    password = None if parts.password is None else unquote(parts.password)
    return base_url, username, password


def _verify(ca_file: str | None, insecure: bool, https: bool) -> ssl.SSLContext | bool:
    if insecure and ca_file:
        raise ValueError("dmaap_insecure and dmaap_ca_file exclude each other; choose one")
    if insecure:
        if https:
            log.warning("TLS certificate checks of the message router are OFF (dmaap_insecure)")
        return False
    if ca_file:
        try:
            return ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"dmaap_ca_file {ca_file!r} is not a readable PEM file: {exc}"
            ) from exc
    return True


def _requests(messages: list[OutMessage], max_bytes: int) -> Iterator[list[OutMessage]]:
    """The messages cut into requests of at most ``max_bytes`` (at least one message each)."""
    request: list[OutMessage] = []
    size = 2
    for message in messages:
        length = len(message.body.encode()) + 1
        if request and size + length > max_bytes:
            yield request
            request, size = [], 2
        request.append(message)
        size += length
    if request:
        yield request


def permanent(status: int) -> bool:
    """Whether an MR answer refuses a publish for good: a 4xx, except 408 and 429 (later
    may work) and 401 and 407 (the credentials of this server, not the message, are wrong:
    every message would be refused until they are fixed, so that waits and retries).
    """
    return 400 <= status < 500 and status not in TRANSIENT_4XX


def _refusal(response: httpx.Response) -> str:
    """The MR's refusal of a message, for the dead letter."""
    return f"message router answered {response.status_code}: {_mr_message(response)}"


def _segment(value: str) -> str:
    return quote(value, safe="")


def _count(response: httpx.Response) -> int | None:
    """The ``count`` of a publish answer, if it has one."""
    with contextlib.suppress(orjson.JSONDecodeError):
        body = orjson.loads(response.content)
        if isinstance(body, dict) and isinstance(body.get("count"), int):
            return int(body["count"])
    return None


def _json(response: httpx.Response) -> Any:
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise RouterUnavailable(
            f"message router answered {response.status_code} with no JSON: {response.text[:200]}"
        ) from exc


def _mr_message(response: httpx.Response) -> str:
    """The DMaaP error's ``message`` (``{"status", "mrstatus", "message"}``), else the text."""
    with contextlib.suppress(orjson.JSONDecodeError):
        body = orjson.loads(response.content)
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            return str(body["message"])
    return response.text[:500] or response.reason_phrase


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _epoch_ms(value: Any) -> int | None:
    """An RFC 3339 time (or epoch milliseconds) as epoch milliseconds; None if absent or bad."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return round(moment.timestamp() * 1000)
    return None
