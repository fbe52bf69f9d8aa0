"""The PAP's channel: this server's PDP on the ``POLICY-PDP-PAP`` topic.

The channel registers the PDP, beats its heart, reads the topic with a consumer group of its
own and posts each answer of :class:`policy_pubsub.onap.pdp.Pdp` back to the same topic, where
the PAP reads it.

Durability. A batch of messages is acknowledged to the router (the group's position moves past
it) only once every message in it was handled: a PDP_UPDATE's change committed, with its
snapshots, and its PDP_STATUS published. A crash, a store outage or a lost router before that
leaves the batch for the next read, and handling a message again is harmless (the update
changes nothing the second time and is answered again; the PAP drops an answer it no longer
waits for). This holds on the server's own message router (``embedded``). An external DMaaP
Message Router moves a group past what it answers (see :mod:`policy_pubsub.routers.dmaap`), so
there a PDP_UPDATE lost in a crash is not read again: the PAP, which got no answer, sends it
again, and the next heartbeat lists what is really deployed, which the PAP corrects.

Replicas. Every replica of a shared store runs a channel, and only the one that holds the
leader lock (:func:`policy_pubsub.store.leadership`) talks to the PAP: the replicas share one
store, hence one set of deployed policies, and are one PDP to the PAP. A replica that takes
over registers afresh, as a restarted PDP does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import uuid
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy.engine import make_url

from policy_pubsub import constants
from policy_pubsub.config import Settings
from policy_pubsub.exceptions import MessageRefused, NotFound, RouterUnavailable, StoreUnavailable
from policy_pubsub.onap import messages
from policy_pubsub.onap.pdp import Pdp, PdpIdentity
from policy_pubsub.onap.topic import PapTopic
from policy_pubsub.routers import OutMessage, Router
from policy_pubsub.service import PolicyService
from policy_pubsub.store import Store, leadership
from policy_pubsub.tasks import cancelled

log = logging.getLogger(__name__)

LOCK_NAME = "policy-pubsub PAP channel"
#: Messages taken from the topic in one read.
READ_LIMIT = 20
#: How long stopping waits to tell the PAP that this PDP terminates.
GOODBYE_SECONDS = 2.0

# Errors after which the channel waits and tries again; anything else is a bug, logged.
_TRANSIENT = (StoreUnavailable, RouterUnavailable, NotFound)


class PapChannel:
    """Runs one :class:`Pdp` on the PAP's topic while this replica holds the channel's lock."""

    def __init__(
        self,
        pdp: Pdp,
        store: Store,
        router: Router,
        topic: str,
        *,
        group: str,
        consumer: str,
        poll_timeout: float = 15.0,
        retry_max: float = 5.0,
        owns_router: bool = False,
    ) -> None:
        self.pdp = pdp
        self._store = store
        self._router = router
        self.topic = topic
        self._group = group
        self._consumer = consumer
        self._poll_timeout = poll_timeout
        self._retry_max = retry_max
        self._owns_router = owns_router
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._interval_changed = asyncio.Event()
        self._first_beat = asyncio.Event()
        self.leading = False
        self.handled = 0  # messages answered, for tests and logs
        self.last_error: str | None = None

    async def start(self) -> None:
        """Start in the running event loop (and the external router, when the channel has one)."""
        if self._owns_router:
            await self._router.start()
        self._task = asyncio.create_task(self._run(), name="policy-pubsub PAP channel")

    async def close(self) -> None:
        """Stop; when leading, tell the PAP this PDP terminates (bounded by a short wait).
        Closing again does nothing.
        """
        if self._closed:
            return
        self._closed = True
        task, self._task = self._task, None
        await cancelled(task)
        if self.leading:
            self.leading = False
            with contextlib.suppress(TimeoutError, *_TRANSIENT, MessageRefused):
                await asyncio.wait_for(self._send(await self.pdp.terminated()), GOODBYE_SECONDS)
        if self._owns_router:
            await self._router.close()

    def report(self) -> dict[str, Any]:
        """What /healthcheck says of the PDP: informative only, the server's health does not
        depend on its PAP.
        """
        return {
            "name": self.pdp.identity.name,
            "group": self.pdp.identity.group,
            "subgroup": self.pdp.subgroup,
            "state": self.pdp.state,
            "topic": self.topic,
            "leader": self.leading,
            "error": self.last_error,
        }

    async def _run(self) -> None:
        async with leadership(self._store, LOCK_NAME) as lock:
            while True:
                if not await lock.acquire():
                    # Another replica is the PDP; take over about as fast as a beat is missed.
                    await asyncio.sleep(min(self._retry_max, self.pdp.heartbeat_ms / 1000))
                    continue
                self.leading = True
                self._restart_pdp()
                if self._store.shared:
                    log.info("PAP channel: this replica is PDP %s", self.pdp.identity.name)
                heart = asyncio.create_task(self._heartbeats(), name="policy-pubsub PDP heartbeat")
                try:
                    await self._first_beat.wait()  # the registration makes the topic
                    await self._consume(lock.acquire)
                finally:
                    await cancelled(heart)
                self.leading = False
                self._first_beat.clear()
                log.info("PAP channel: another replica took the lead")

    def _restart_pdp(self) -> None:
        """A PDP that starts (or a replica that takes over) registers PASSIVE, unassigned."""
        self.pdp.state = messages.PASSIVE
        self.pdp.subgroup = None

    async def _heartbeats(self) -> None:
        """The registration at once, then a PDP_STATUS every heartbeat interval (the PAP's,
        once a PDP_UPDATE gave one); a beat that cannot be sent is skipped.
        """
        while True:
            self._interval_changed.clear()
            try:
                await self._send(await self.pdp.status())
            except (*_TRANSIENT, MessageRefused) as exc:
                self._failed("heartbeat not sent", exc)
            except Exception:
                log.exception("PAP channel: heartbeat failed")
            self._first_beat.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._interval_changed.wait(), self.pdp.heartbeat_ms / 1000)

    async def _consume(self, leading: Any) -> None:
        """Read, answer and acknowledge until the lead is lost (cancellation stops it)."""
        backoff = 0.0
        while True:
            if backoff:
                await asyncio.sleep(backoff)
            if not await leading():
                return
            try:
                await self._read_once()
            except _TRANSIENT as exc:
                self._failed("PAP topic not read, will retry", exc)
                backoff = min(self._retry_max, max(0.05, backoff * 2)) * random.uniform(0.8, 1.2)
                continue
            if self.last_error is not None:
                log.info("PAP channel: topic %r reachable again", self.topic)
                self.last_error = None
            backoff = 0.0

    async def _read_once(self) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        async with await self._router.read(
            self.topic,
            self._group,
            self._consumer,
            timeout=self._poll_timeout,
            limit=READ_LIMIT,
        ) as delivery:
            interval = self.pdp.heartbeat_ms
            for text in delivery.messages:
                try:
                    answer = await self.pdp.handle(text)
                except _TRANSIENT:
                    raise  # read again once the store or router is back
                except Exception:
                    # A fault of ours with this message: skipped, not retried for ever.
                    log.exception("PAP channel: skipped a message it failed to handle")
                    continue
                if answer is None:
                    continue
                try:
                    await self._send(answer)
                except MessageRefused as exc:
                    # Refused for good: the PAP times out on it and asks again.
                    log.warning("PAP channel: an answer was refused by the router: %s", exc)
                self.handled += 1
            await delivery.ack()
        if self.pdp.heartbeat_ms != interval:
            self._interval_changed.set()
        if not delivery.messages and loop.time() - began < 0.01:
            await asyncio.sleep(0.05)  # a router that drains answers at once: do not spin

    async def _send(self, message: dict[str, Any]) -> None:
        await self._router.publish([OutMessage(self.topic, orjson.dumps(message).decode())])

    def _failed(self, what: str, exc: Exception) -> None:
        text = str(exc)
        if self.last_error != text:
            log.warning("PAP channel: %s: %s", what, text)
        self.last_error = text


def build_pdp(settings: Settings, service: PolicyService) -> Pdp:
    """The server's PDP: PASSIVE until a PAP activates it when a PAP topic is configured;
    otherwise ACTIVE, as the webhook has always answered.
    """
    joins = settings.pap_topic_url is not None
    name = settings.pdp_name or (
        default_pdp_name(settings.database_url) if joins else constants.SERVICE_NAME
    )
    return Pdp(
        service,
        PdpIdentity(name, settings.pdp_type, settings.pdp_group),
        state=messages.PASSIVE if joins else messages.ACTIVE,
        heartbeat_ms=settings.pdp_heartbeat_ms,
        max_policies=settings.max_policies_per_push,
    )


def build_channel(settings: Settings, pdp: Pdp, store: Store, router: Router) -> PapChannel | None:
    """The channel the settings ask for (None without ``pap_topic_url``): on the server's own
    router, or on an external DMaaP MR with the ``dmaap_*`` options.
    """
    if settings.pap_topic_url is None:
        return None
    where = PapTopic.parse(settings.pap_topic_url)
    owns = where.mr_url is not None
    if where.mr_url is not None:
        from policy_pubsub.routers.dmaap import DmaapRouter

        router = DmaapRouter.from_settings(where.mr_url, settings)
    name = pdp.identity.name
    return PapChannel(
        pdp,
        store,
        router,
        where.topic,
        group=settings.pap_consumer_group or name,
        consumer=name,
        poll_timeout=settings.pap_poll_timeout_ms / 1000,
        owns_router=owns,
    )


# Names the PDP of one store: uuid5 in this namespace of the store's identity.
_PDP_NAMESPACE = uuid.UUID("6b1f3c2e-8d4a-5e7b-9c1d-2f3a4b5c6d7e")


def default_pdp_name(database_url: str) -> str:
    """``policy-pubsub-<uuid>``, the uuid derived from the store, so that the name is the same
    at every start and on every replica of the store: the replicas of one store are one PDP to
    the PAP, and a restarted PDP keeps its name and its consumer group of the PAP topic. A
    SQLite store is named by its host and absolute path (two machines may have the same
    path), any other by its URL without the password.
    """
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        path = str(Path(url.database or "").resolve()) if url.database else ":memory:"
        identity = f"sqlite:{socket.gethostname()}:{path}"
    else:
        identity = url.render_as_string(hide_password=True)
    return f"{constants.SERVICE_NAME}-{uuid.uuid5(_PDP_NAMESPACE, identity)}"


__all__ = ["LOCK_NAME", "PapChannel", "build_channel", "build_pdp", "default_pdp_name"]
