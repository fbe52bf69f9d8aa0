"""Two replicas on one PostgreSQL store answer as one server: a property-based test.

Hypothesis draws interleavings of pushes, deletes, subscribes, unsubscribes, decision reads
and subscription reads, each sent to replica A or B, and a model says what each answer must
be. After every change the *other* replica is asked too, so an acknowledged change must be
visible on both at once; every acknowledged revision is above the one before (one revision
order across both replicas); a subscription read (``?policies=true``) gives exactly the
model's policies for that subscriber and labels them with the revision of the last snapshot
the model says was published to it.

A replica learns of the other's commits from PostgreSQL ``NOTIFY`` and takes them in at once,
in the background, but the notification can arrive a moment after the answer to the change
(README "Several replicas": a few milliseconds, more under load): the check on the other
replica right after a change is asked again until it passes, for at most ``SETTLE`` seconds, a
ceiling that a passing run does not wait for. Every other read must be exact at once.

The two servers are real processes, started once for the test; each example works on ids of
its own (``e<n>.``), so examples need no fresh database and the model covers only them. At
the end a third process, started afresh on the store, answers every example's reads as the
model says too.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import postgres_database
from tests.processes import ServerProcess

pytestmark = pytest.mark.slow

POLICIES = 4  # p0, p1 of type a; p2, p3 of type b
SUBSCRIBERS = 3
FILTERS = 5  # see _filters
SETTLE = 2.0


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[ServerProcess, ServerProcess]]:
    """Replicas A and B (subprocesses, embedded router) on a fresh PostgreSQL database."""
    async with (
        postgres_database() as url,
        ServerProcess(url, tmp_path / "a.log") as a,
        ServerProcess(url, tmp_path / "b.log") as b,
    ):
        yield a, b


def _filters(example: str, choice: int) -> list[dict[str, Any]]:
    """One of a few filter sets over the example's policies: by id, ids, prefix, type."""
    choices: list[list[dict[str, Any]]] = [
        [{"policy-id": f"{example}.p0"}],
        [{"policy-id": [f"{example}.p1", f"{example}.p2"]}],
        [{"policy-id": f"{example}.*"}],
        [{"policy-type": f"{example}.type.b"}],
        [{"policy-type": f"{example}.type.a"}, {"policy-id": f"{example}.p3"}],
    ]
    return choices[choice]


def _matches(filters: Sequence[dict[str, Any]], policy_id: str, policy_type: str) -> bool:
    """The model's matching, written apart from the server's: exact, or prefix with ``*``."""

    def one(pattern: str, value: str) -> bool:
        return value.startswith(pattern[:-1]) if pattern.endswith("*") else value == pattern

    def listed(values: Any) -> list[str]:
        return [values] if isinstance(values, str) else list(values or [])

    return any(
        any(one(p, policy_id) for p in listed(f.get("policy-id")))
        or any(one(p, policy_type) for p in listed(f.get("policy-type")))
        for f in filters
    )


@dataclass
class Subscriber:
    filters: list[dict[str, Any]]
    last_revision: int


@dataclass
class Model:
    """What the acknowledged changes of one example make of the store."""

    example: str
    deployed: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscribers: dict[str, Subscriber] = field(default_factory=dict)
    revision: int = 0  # the last acknowledged revision, across both replicas
    versions: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def policy(self, index: int) -> dict[str, Any]:
        policy_id = f"{self.example}.p{index}"
        version = f"{next(self.versions)}.0.0"
        return {
            "type": f"{self.example}.type.{'ab'[index * 2 // POLICIES]}",
            "type_version": "1.0.0",
            "name": policy_id,
            "version": version,
            "metadata": {"policy-id": policy_id, "policy-version": version},
            "properties": {"index": index},
        }

    def acknowledge(self, revision: int) -> None:
        assert revision > self.revision, f"revision {revision} after {self.revision}"
        self.revision = revision

    def matching(self, filters: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {
            pid: body for pid, body in self.deployed.items() if _matches(filters, pid, body["type"])
        }

    def notify(self, policy_id: str, policy_type: str, revision: int) -> int:
        """A change of ``policy_id`` at ``revision``: who gets a snapshot of it."""
        notified = 0
        for subscriber in self.subscribers.values():
            if _matches(subscriber.filters, policy_id, policy_type):
                subscriber.last_revision = revision
                notified += 1
        return notified


Step = tuple[str, int, int, int]  # (what, replica, which, filter choice)

STEPS = st.lists(
    st.tuples(
        st.sampled_from(["push", "push", "delete", "subscribe", "unsubscribe", "decide", "read"]),
        st.integers(0, 1),
        st.integers(0, max(POLICIES, SUBSCRIBERS) - 1),
        st.integers(0, FILTERS - 1),
    ),
    min_size=1,
    max_size=20,
)


async def test_two_replicas_answer_as_the_model_says(
    pair: tuple[ServerProcess, ServerProcess], tmp_path: Path
) -> None:
    urls = [pair[0].url, pair[1].url]
    examples = itertools.count()

    @settings(
        max_examples=15,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(steps=STEPS)
    def check(steps: list[Step]) -> None:
        with httpx.Client(timeout=30, trust_env=False) as http:
            model = Model(f"e{next(examples)}")
            _run(http, urls, model, steps)
            models.append(model)

    models: list[Model] = []
    # Hypothesis drives a synchronous body: it runs in a thread, this loop keeps the servers.
    await asyncio.to_thread(check)

    # A process started afresh on the store answers as the two did, for every example.
    async with ServerProcess(pair[0].database_url, tmp_path / "fresh.log") as fresh:
        await asyncio.to_thread(_check_all, fresh.url, models)


def _check_all(url: str, models: list[Model]) -> None:
    with httpx.Client(timeout=30, trust_env=False) as http:
        for model in models:
            _check_final(http, model, url)


def _run(http: httpx.Client, urls: list[str], model: Model, steps: list[Step]) -> None:
    for what, replica, which, choice in steps:
        here, there = urls[replica], urls[1 - replica]
        if what == "push":
            _push(http, model, here, which % POLICIES)
            _settled(_check_decision, http, model, there, _filters(model.example, 2))
        elif what == "delete":
            _delete(http, model, here, which % POLICIES)
            _settled(_check_decision, http, model, there, _filters(model.example, 2))
        elif what == "subscribe":
            name = _subscribe(http, model, here, which % SUBSCRIBERS, choice)
            _settled(_check_subscription, http, model, there, name)
        elif what == "unsubscribe":
            name = f"{model.example}-s{which % SUBSCRIBERS}"
            answer = http.delete(f"{here}/decision/v1/subscription/{name}")
            expected = 204 if model.subscribers.pop(name, None) is not None else 404
            assert answer.status_code == expected, answer.text
            _settled(_check_subscription, http, model, there, name)
        elif what == "decide":
            _check_decision(http, model, here, _filters(model.example, choice))
        else:
            _check_subscription(http, model, here, f"{model.example}-s{which % SUBSCRIBERS}")
    # In the end both replicas agree with the model on everything this example touched.
    for url in urls:
        _check_final(http, model, url)


def _check_final(http: httpx.Client, model: Model, url: str) -> None:
    """Every filter set's decision and every subscription read, as the model says."""
    for choice in range(FILTERS):
        _check_decision(http, model, url, _filters(model.example, choice))
    for index in range(SUBSCRIBERS):
        _check_subscription(http, model, url, f"{model.example}-s{index}")


def _settled(check: Callable[..., None], *args: Any) -> None:
    """``check(*args)`` passes within ``SETTLE`` seconds (the other replica's notification)."""
    deadline = time.monotonic() + SETTLE
    while True:
        try:
            check(*args)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
        else:
            return


def _push(http: httpx.Client, model: Model, url: str, index: int) -> None:
    body = model.policy(index)
    answer = http.post(f"{url}/pap/v1/policies", json={"policies": [body]})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    model.acknowledge(result["revision"])
    policy_id = body["metadata"]["policy-id"]
    model.deployed[policy_id] = body
    notified = model.notify(policy_id, body["type"], result["revision"])
    assert result["notified"] == notified, (result, model.subscribers)


def _delete(http: httpx.Client, model: Model, url: str, index: int) -> None:
    policy_id = f"{model.example}.p{index}"
    answer = http.delete(f"{url}/pap/v1/policies/{policy_id}")
    body = model.deployed.pop(policy_id, None)
    if body is None:
        assert answer.status_code == 404, answer.text
        return
    assert answer.status_code == 200, answer.text
    result = answer.json()
    model.acknowledge(result["revision"])
    notified = model.notify(policy_id, body["type"], result["revision"])
    assert result["notified"] == notified, (result, model.subscribers)


def _subscribe(http: httpx.Client, model: Model, url: str, index: int, choice: int) -> str:
    name = f"{model.example}-s{index}"
    filters = _filters(model.example, choice)
    answer = http.post(
        f"{url}/decision/v1/subscription/{name}",
        json={"subscriber_topic": f"topic-{name}", "policy-filters": filters},
    )
    assert answer.status_code == (200 if name in model.subscribers else 201), answer.text
    result = answer.json()
    model.acknowledge(result["revision"])
    model.subscribers[name] = Subscriber(filters, result["revision"])
    assert result["policies"] == model.matching(filters)
    return name


def _check_decision(
    http: httpx.Client, model: Model, url: str, filters: list[dict[str, Any]]
) -> None:
    answer = http.post(f"{url}/decision/v1", json={"policy-filters": filters})
    assert answer.status_code == 200, answer.text
    assert answer.json()["policies"] == model.matching(filters), (url, filters)


def _check_subscription(http: httpx.Client, model: Model, url: str, name: str) -> None:
    answer = http.get(f"{url}/decision/v1/subscription/{name}", params={"policies": "true"})
    subscriber = model.subscribers.get(name)
    if subscriber is None:
        assert answer.status_code == 404, (url, name, answer.text)
        return
    assert answer.status_code == 200, (url, name, answer.text)
    shown = answer.json()
    assert shown["policy-filters"] == subscriber.filters, (url, name)
    assert shown["status"]["last_revision"] == subscriber.last_revision, (url, name, shown)
    assert shown["policies"] == model.matching(subscriber.filters), (url, name)
