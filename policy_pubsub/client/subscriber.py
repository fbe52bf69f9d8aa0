"""``PolicySubscriber``: a component's subscription, its changes, and what it has applied.

Two ways to consume, with the same guarantee (a change is redelivered until the component
says it applied it, and the state file only ever records applied snapshots):

- iterator, for asyncio programs: ``async for change in subscriber.changes()``; a change
  counts as applied when the loop asks for the next one (or on ``await subscriber.ack()``);
- callback: ``subscriber.run(handler)`` blocks in the calling thread with an event loop of its
  own, for programs that are not asyncio (``await subscriber.consume(handler)`` inside one); a
  change counts as applied when ``handler`` returns, and a handler that raises gets the change
  again (recomputed against what was last applied) after a backoff.

The snapshots come from a long-poll of the MR read API (the server's ``/events``, or a DMaaP
Message Router), or, with an ``amqp://`` or ``amqps://`` ``router_url``, straight from the
subscriber's own queue on the RabbitMQ the server publishes to (``policy_pubsub.client.amqp``,
installed by the ``amqp`` extra). There a message is acknowledged only once the component
applied a snapshot that supersedes it, so what a crash interrupts RabbitMQ delivers again.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import httpx

from policy_pubsub import constants
from policy_pubsub.client.changes import EMPTY, PolicyChange, Snapshot
from policy_pubsub.client.feed import Feed, HttpFeed
from policy_pubsub.client.http import BearerAuth, HttpClient, TransientError
from policy_pubsub.client.reader import Reader
from policy_pubsub.client.state import StateFile
from policy_pubsub.client.timings import Timings
from policy_pubsub.client.wire import Wire
from policy_pubsub.exceptions import ClientError, ServerUnreachable
from policy_pubsub.subscription_record import SubscriptionRecord

log = logging.getLogger("policy_pubsub.client")

Handler = Callable[[PolicyChange], Awaitable[object] | object]

_NEW, _OPEN, _CLOSED = "new", "open", "closed"
DEFAULT_TIMINGS = Timings()
HTTP_SCHEMES = ("http://", "https://")
AMQP_SCHEMES = ("amqp://", "amqps://")
#: The modules the ``amqp`` extra installs.
AMQP_MODULES = frozenset({"aio_pika", "aiormq", "pamqp"})
AMQP_EXTRA_HINT = "pip install 'policy-pubsub-client[amqp]'"


class PolicySubscriber:
    """A component's subscription to its policies on a policy-pubsub server.

    ``async with`` subscribes (insert or update) and closes; ``policies`` is what the
    component holds: the subscribe answer, or with a ``state_file`` the last snapshot it
    applied (nothing on the first run), so that a restart reports a true delta. The long-poll
    goes to ``router_url`` (the server itself by default; any DMaaP Message Router works) as
    consumer ``consumer_group``/``consumer_id`` (both the subscriber id by default: stable, so
    a restart resumes where it stopped). An ``amqp://user:password@host:5672/vhost`` (or
    ``amqps://``) ``router_url`` instead consumes the subscriber's queue on the RabbitMQ the
    server publishes to, at most ``poll_limit`` messages unacknowledged, with the server's
    exchange ``amqp_exchange`` and, for ``amqps://``, the CAs in ``amqp_ca_file`` (a PEM
    bundle; the system's when None); it needs the ``amqp`` extra (aio-pika), else
    ``ImportError``. Every delay is in ``timings`` (a ``Timings``, in seconds; reconnecting to
    RabbitMQ backs off as a failed poll does). Without ``Timings.give_up_after`` an
    unreachable server is retried for ever; with it, requests failing for that long raise
    ``ServerUnreachable``. The subscription survives ``close`` unless
    ``unsubscribe_on_close`` (for an uninstall). Credentials:
    ``auth=(user, password)`` (HTTP Basic, or any ``httpx.Auth``) or ``token=`` (Bearer), sent
    with every request; a router URL may carry its own (``https://user:password@mr:3905``).
    ``http`` or ``transport`` replace the HTTP client (an ``http`` passed in is not closed).
    """

    def __init__(
        self,
        url: str,
        *,
        subscriber_id: str,
        subscriber_topic: str,
        policy_filters: Sequence[Mapping[str, Any]],
        onap_name: str | None = None,
        onap_component: str | None = None,
        onap_instance: str | None = None,
        router_url: str | None = None,
        amqp_exchange: str = constants.DEFAULT_AMQP_EXCHANGE,
        amqp_ca_file: str | None = None,
        consumer_group: str | None = None,
        consumer_id: str | None = None,
        state_file: str | os.PathLike[str] | None = None,
        unsubscribe_on_close: bool = False,
        timings: Timings = DEFAULT_TIMINGS,
        poll_limit: int = constants.DEFAULT_POLL_LIMIT,
        auth: httpx.Auth | tuple[str, str] | None = None,
        token: str | None = None,
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not url.startswith(HTTP_SCHEMES):
            raise ValueError(f"url must be an http:// or https:// URL, not {url!r}")
        amqp = router_url is not None and router_url.startswith(AMQP_SCHEMES)
        if router_url is not None and not (amqp or router_url.startswith(HTTP_SCHEMES)):
            raise ValueError(
                "router_url must be an http://, https://, amqp:// or amqps:// URL, "
                f"not {router_url!r}"
            )
        _check("subscriber_id", subscriber_id, constants.SUBSCRIBER_ID_PATTERN)
        _check("subscriber_topic", subscriber_topic, constants.TOPIC_PATTERN)
        _check("amqp_exchange", amqp_exchange, constants.AMQP_EXCHANGE_PATTERN)
        if amqp and (consumer_group is not None or consumer_id is not None):
            raise ValueError(
                "consumer_group and consumer_id are for a long-poll; over AMQP the subscriber "
                "consumes its own queue"
            )
        if amqp_ca_file is not None and not (router_url or "").startswith("amqps://"):
            raise ValueError("amqp_ca_file is for an amqps:// router_url")
        consumer_group = subscriber_id if consumer_group is None else consumer_group
        consumer_id = subscriber_id if consumer_id is None else consumer_id
        _check("consumer_group", consumer_group, constants.CONSUMER_PATTERN)
        _check("consumer_id", consumer_id, constants.CONSUMER_PATTERN)
        if isinstance(policy_filters, Mapping) or not policy_filters:
            raise ValueError("policy_filters must be a non-empty list of filter objects")
        if not all(isinstance(f, Mapping) for f in policy_filters):
            raise ValueError("each policy filter must be a mapping such as {'policy-id': [...]}")
        if not isinstance(timings, Timings):
            raise ValueError("timings must be a Timings, e.g. Timings(backoff_max=5.0)")
        if poll_limit < 1:
            raise ValueError("poll_limit must be at least 1")
        if http is not None and transport is not None:
            raise ValueError("give http or transport, not both")
        if auth is not None and token is not None:
            raise ValueError("give auth (HTTP Basic) or token (Bearer), not both")
        self.url = url.rstrip("/")
        # An AMQP URL keeps its path as given: it is the vhost.
        self.router_url = router_url if amqp and router_url else (router_url or url).rstrip("/")
        self.subscriber_id = subscriber_id
        self.subscriber_topic = subscriber_topic
        self.consumer_group = consumer_group
        self.consumer_id = consumer_id
        self.unsubscribe_on_close = unsubscribe_on_close
        # A copy that is plain JSON: the caller's filters may change, or hold other types.
        filters = json.loads(json.dumps([dict(f) for f in policy_filters]))
        self._subscription = SubscriptionRecord.make(
            subscriber_id,
            subscriber_topic,
            filters,
            onap_name=onap_name,
            onap_component=onap_component,
            onap_instance=onap_instance,
        )
        self._state_file = None if state_file is None else StateFile(state_file, subscriber_id)
        self.timings = timings
        self._poll_limit = poll_limit
        self._auth = BearerAuth(token) if token is not None else auth
        self._given_http = http
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._feed: Feed | None = None
        if amqp:
            self._feed = _amqp_feed(
                self.router_url,
                queue=subscriber_id,
                exchange=amqp_exchange,
                prefetch=poll_limit,
                timeout=timings.request_timeout,
                ca_file=amqp_ca_file,
            )
        self._reader: Reader | None = None
        self._applied: Snapshot = EMPTY
        self._pending: tuple[PolicyChange, Snapshot] | None = None
        self._generation = 0
        self._reading = False
        self._phase = _NEW
        self._stop_requested = False
        self._stopped: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- what the component holds ---------------------------------------------------------

    @property
    def policies(self) -> dict[str, Mapping[str, Any]]:
        """The policies the component holds: policy-id -> policy (a copy)."""
        return dict(self._applied.policies)

    @property
    def revision(self) -> int:
        """The revision of the snapshot the component holds (-1 before any)."""
        return self._applied.revision

    # -- life cycle -----------------------------------------------------------------------

    async def __aenter__(self) -> PolicySubscriber:
        if self._phase != _NEW:
            raise RuntimeError("a PolicySubscriber is opened once; make a new one")
        self._phase = _OPEN
        self._stopped = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        if self._stop_requested:
            self._stopped.set()
        try:
            await self._open()
        except BaseException:
            await self._close_connections()
            self._phase = _CLOSED
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            await self.aclose()
            return
        try:
            await self.aclose()
        except ClientError as error:  # do not hide the exception already on its way out
            log.warning("closing %s: %s", self.subscriber_id, error)

    async def _open(self) -> None:
        held = None
        if self._state_file is not None:
            held = await asyncio.to_thread(self._state_file.load)
        self._http = self._given_http or httpx.AsyncClient(transport=self._transport)
        if self._stopped is None:
            raise RuntimeError("_open() runs inside __aenter__")
        wire = self._wire(self._http)
        if self._feed is None:
            self._feed = HttpFeed(
                wire,
                topic=self.subscriber_topic,
                group=self.consumer_group,
                consumer=self.consumer_id,
                limit=self._poll_limit,
            )
        self._reader = Reader(
            wire, self._feed, record=self._subscription, timings=self.timings, stopped=self._stopped
        )
        await self._reader.subscribe()
        # With a state file the component holds what it last applied (nothing on a first run)
        # and the subscribe answer is its first change; without one it starts from the answer.
        if held is not None:
            self._applied = held
        elif self._state_file is None:
            self._applied = self._reader.latest

    async def aclose(self) -> None:
        """Stop reading and close; with ``unsubscribe_on_close``, delete the subscription
        first (a failure to do so is raised, after the HTTP client is closed).
        """
        if self._phase == _CLOSED:
            return
        opened = self._phase == _OPEN and self._reader is not None
        self._phase = _CLOSED
        self.stop()
        try:
            if opened and self.unsubscribe_on_close:
                await self.unsubscribe()
        finally:
            await self._close_connections()

    def _wire(self, http: httpx.AsyncClient) -> Wire:
        client = HttpClient(
            http,
            self.url,
            router_url=None if self.router_url.startswith(AMQP_SCHEMES) else self.router_url,
            timeout=self.timings.request_timeout,
            auth=self._auth,
        )
        return Wire(client)

    async def _close_connections(self) -> None:
        if self._feed is not None:
            await self._feed.aclose()
        if self._http is not None and self._given_http is None:
            await self._http.aclose()
        self._http = None

    async def unsubscribe(self) -> bool:
        """Delete the subscription on the server now; False if it had none. One attempt:
        ``ServerUnreachable`` if it fails, ``RequestRejected`` if the server refuses.
        """
        if self._http is None:
            raise RuntimeError("unsubscribe() needs an open subscriber")
        try:
            found = await self._wire(self._http).unsubscribe(self.subscriber_id)
        except TransientError as exc:
            raise ServerUnreachable(exc.url, 1, exc.reason) from exc
        log.info("unsubscribed %s", self.subscriber_id)
        return found

    def stop(self) -> None:
        """Ask ``changes()``, ``consume()`` and ``run()`` to end (soon, and without applying
        anything more). Safe from any thread, a handler or a signal handler; idempotent.
        """
        self._stop_requested = True
        loop, stopped = self._loop, self._stopped
        if loop is None or stopped is None or loop.is_closed():
            return
        try:
            if _running_loop() is loop:
                stopped.set()
            else:
                loop.call_soon_threadsafe(stopped.set)
        except RuntimeError:  # the loop closed meanwhile: nothing is reading any more
            pass

    # -- iterator style -------------------------------------------------------------------

    async def changes(self) -> AsyncIterator[PolicyChange]:
        """Each change, as it arrives, computed against what the component holds.

        A change counts as applied when the loop asks for the next one (or after ``ack()``);
        leaving the loop by ``break`` or an exception leaves it unapplied, so the next call
        of ``changes()`` (or, with a state file, the next run) delivers it again. Ends after
        ``stop()`` or ``aclose()``.
        """
        self._generation += 1
        generation = self._generation
        self._pending = None  # whatever an earlier loop left unapplied comes again
        while True:
            change = await self._next_change()
            if change is None or generation != self._generation:
                return
            yield change
            if generation != self._generation:
                return  # a newer changes() took over
            await self.ack()

    async def ack(self) -> None:
        """Mark the change ``changes()`` last gave as applied (recorded in the state file);
        nothing when there is none. Asking ``changes()`` for the next change does the same.
        """
        if self._pending is not None:
            await self._record(self._pending[1])
            self._pending = None

    # -- callback style -------------------------------------------------------------------

    async def consume(self, handler: Handler) -> None:
        """Call ``handler(change)`` for each change until ``stop()``; a change is applied
        when the handler returns. A handler that raises is logged and called again with the
        change (recomputed against what was last applied) after a backoff. ``handler`` may be
        a plain function (called in the event loop's thread) or an ``async`` one.
        """
        if self._reader is None:
            raise RuntimeError("consume() needs an open subscriber (async with ...)")
        failures = 0
        while True:
            change = await self._next_change()
            if change is None:
                return
            try:
                result = handler(change)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                failures += 1
                delay = self._reader.backoff(failures)
                log.warning(
                    "the handler failed on revision %d (%d in a row); it gets the change "
                    "again in %.2f s",
                    change.revision,
                    failures,
                    delay,
                    exc_info=True,
                )
                await self._reader.sleep(delay)
                continue
            failures = 0
            await self._record(self._pending_snapshot(change))

    def run(self, handler: Handler) -> None:
        """Subscribe, call ``handler(change)`` for each change until ``stop()``, then close:
        a blocking call for programs that are not asyncio, in the main thread or a thread of
        their own (``threading.Thread(target=subscriber.run, args=(handler,))``, and
        ``subscriber.stop()`` from anywhere to end it). Errors (``SubscriptionRejected``,
        ``ServerUnreachable``, ``StateFileError``) are raised in the calling thread.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "run() blocks; inside an event loop use "
                "'async with subscriber: await subscriber.consume(handler)'"
            )
        if self._phase != _NEW:
            raise RuntimeError("a PolicySubscriber is opened once; make a new one")
        asyncio.run(self._run(handler))

    async def _run(self, handler: Handler) -> None:
        async with self:
            await self.consume(handler)

    # -- internals ------------------------------------------------------------------------

    async def _next_change(self) -> PolicyChange | None:
        """The next change to deliver (the newest snapshot against the applied one), reading
        until there is one; None once stopped.
        """
        if self._reader is None:
            raise RuntimeError("changes() needs an open subscriber (async with ...)")
        if self._phase != _OPEN:
            return None
        if self._reading:
            raise RuntimeError("another changes() or consume() is already reading")
        self._reading = True
        try:
            reader = self._reader
            while not self._stop_requested:
                latest = reader.latest
                if latest is not self._applied:
                    change = PolicyChange.between(self._applied, latest)
                    if not change.empty:
                        self._pending = (change, latest)
                        return change
                    await self._record(latest)  # the same policies, a newer revision
                    continue
                try:
                    await reader.step()
                except Exception:
                    if self._phase == _CLOSED:  # closed under the poll by another task
                        return None
                    raise
                await self._settle()
            return None
        finally:
            self._reading = False

    def _pending_snapshot(self, change: PolicyChange) -> Snapshot:
        if self._pending is None or self._pending[0] is not change:
            raise RuntimeError("no such pending change")
        snapshot = self._pending[1]
        self._pending = None
        return snapshot

    async def _record(self, snapshot: Snapshot) -> None:
        """The component applied ``snapshot``: write the state file, then hold it."""
        if self._state_file is not None:
            await asyncio.to_thread(self._state_file.save, snapshot)
        self._applied = snapshot
        await self._settle()

    async def _settle(self) -> None:
        """Once the component holds the newest snapshot the reader knows, every message read
        so far is superseded by what it applied: acknowledge them (over AMQP; a long-poll's
        router acknowledged them on answering). Not before, so that a crash in between gets
        them again.
        """
        reader = self._reader
        if reader is not None and reader.latest is self._applied:
            await reader.feed.settle()

    def __repr__(self) -> str:
        return (
            f"<PolicySubscriber {self.subscriber_id} topic={self.subscriber_topic} "
            f"revision={self.revision} {self._phase}>"
        )


def _amqp_feed(
    url: str,
    *,
    queue: str,
    exchange: str,
    prefetch: int,
    timeout: float,
    ca_file: str | None,
) -> Feed:
    """The feed of an ``amqp(s)://`` router URL; imported here, so that a component without
    the ``amqp`` extra never imports aio-pika.
    """
    try:
        from policy_pubsub.client.amqp import AmqpFeed, amqp_ssl_context
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in AMQP_MODULES:
            raise
        raise ImportError(
            f"router_url {url.partition(':')[0]}:// needs aio-pika, which the SDK's amqp "
            f"extra installs: {AMQP_EXTRA_HINT}"
        ) from exc
    context = amqp_ssl_context(ca_file) if url.startswith("amqps://") else None
    return AmqpFeed(
        url,
        queue=queue,
        exchange=exchange,
        prefetch=prefetch,
        timeout=timeout,
        ssl_context=context,
    )


def _check(name: str, value: str, pattern: str) -> None:
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        raise ValueError(f"{name} {value!r} does not match {pattern}")


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
