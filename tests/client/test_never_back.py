"""The SDK's reader never goes back: whatever the interleaving of polls, re-reads, lost
replies, redeliveries, failures and changes, the snapshot it holds only moves forward, and the
revision it labels a snapshot with is the revision of exactly those policies.

The server is a model here (a property-based test has to choose where each change lands
between the reader's requests, which a real server cannot be made to do); what the model
answers follows the wire contract: the subscribe answer, ``GET .../subscription/{id}?policies=
true`` with ``status.last_revision``, and at-least-once snapshots on the topic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy_pubsub.client.feed import HttpFeed
from policy_pubsub.client.http import TransientError
from policy_pubsub.client.reader import Reader
from policy_pubsub.client.timings import Timings
from policy_pubsub.client.wire import Wire
from policy_pubsub.subscription_record import SubscriptionRecord

SUBSCRIBER = "s1"
TOPIC = "policies_s1"


@dataclass
class ModelServer:
    """The store as far as one subscriber sees it: its policy's version at each revision, the
    snapshots published to its topic, and its consumer group's position.
    """

    revision: int = 0
    version: int = 0
    last_revision: int = 0  # of the last snapshot published to the subscriber
    versions: dict[int, int] = field(default_factory=lambda: {0: 0})  # label -> version
    topic: list[dict[str, Any]] = field(default_factory=list)
    position: int = 0
    subscribed: bool = False
    # What happens to the next request: taken from the front, "ok" when empty.
    faults: list[str] = field(default_factory=list)

    def change(self, affects_subscriber: bool) -> None:
        self.revision += 1
        if affects_subscriber:
            self.version += 1
        if affects_subscriber and self.subscribed:
            self._publish("update")

    def _publish(self, event: str) -> None:
        self.last_revision = self.revision
        self.versions[self.revision] = self.version
        self.topic.append(
            {
                "subscriber_id": SUBSCRIBER,
                "revision": self.revision,
                "event": event,
                "policies": self.policies(),
            }
        )

    def policies(self) -> dict[str, Any]:
        return {"p": {"version": f"{self.version}.0.0"}}

    def _fault(self) -> str:
        return self.faults.pop(0) if self.faults else "ok"

    # -- the Wire methods the reader calls --------------------------------------------------

    async def subscribe(self, subscriber_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        if self._fault() == "fail":
            raise TransientError("model", "refused before the change")
        self.revision += 1
        self.subscribed = True
        self._publish("subscribe")
        return {"revision": self.revision, "policies": self.policies()}

    async def subscription(
        self, subscriber_id: str, *, with_policies: bool = False
    ) -> dict[str, Any] | None:
        fault = self._fault()
        if fault == "change-first":
            self.change(True)
        elif fault == "fail":
            raise TransientError("model", "no answer")
        record: dict[str, Any] = {"status": {"last_revision": self.last_revision}}
        if with_policies:
            record["policies"] = self.policies()
        return record

    async def poll(
        self, topic: str, group: str, consumer: str, *, timeout: float, limit: int
    ) -> list[Any]:
        fault = self._fault()
        if fault == "fail":
            raise TransientError("model", "no answer")
        if fault == "change-first":
            self.change(True)
        if fault == "redeliver":
            self.position = max(0, self.position - 2)  # at least once: older ones again
        batch = self.topic[self.position : self.position + limit]
        self.position += len(batch)
        if fault == "lose":
            raise TransientError("model", "the reply was lost on the way")
        return batch


STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("change"), st.booleans()),
        st.tuples(
            st.just("step"),
            st.sampled_from(["ok", "ok", "fail", "lose", "redeliver", "change-first"]),
        ),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=STEPS)
def test_the_reader_never_goes_back_and_labels_exactly(steps: list[tuple[str, Any]]) -> None:
    asyncio.run(_run(steps))


async def _run(steps: list[tuple[str, Any]]) -> None:
    server = ModelServer()
    record = SubscriptionRecord.make(SUBSCRIBER, TOPIC, [{"policy-id": "p"}])
    wire: Wire = server  # type: ignore[assignment]  # the model answers as Wire does
    reader = Reader(
        wire,
        HttpFeed(wire, topic=TOPIC, group=SUBSCRIBER, consumer=SUBSCRIBER, limit=3),
        record=record,
        timings=Timings(poll_timeout=0, backoff_initial=0, backoff_max=0, resync_interval=0),
        stopped=asyncio.Event(),
    )
    await reader.subscribe()
    held: list[int] = []
    for kind, arg in steps:
        if kind == "change":
            server.change(arg)
            continue
        server.faults.append(arg)
        await reader.step()
        latest = reader.latest
        version = int(latest.policies["p"]["version"].split(".")[0])
        # The label is exact: the policies are those of the snapshot of that revision.
        assert server.versions[latest.revision] == version, (latest, server.versions)
        if held:
            assert version >= held[-1], f"went back from {held[-1]} to {version}: {steps}"
        held.append(version)
    # With nothing left to go wrong, the reader catches up with the server.
    for _ in range(len(server.topic) + 2):
        await reader.step()
    assert reader.latest.policies == server.policies()
