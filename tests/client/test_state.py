"""The state file: a restarted component gets a true delta against what it had applied, and
the file records only applied snapshots, written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from policy_pubsub.client.changes import Snapshot
from policy_pubsub.client.state import FORMAT, StateFile
from policy_pubsub.exceptions import StateFileError
from tests.api.helpers import push, tosca, undeploy
from tests.client.conftest import SUBSCRIBER, ids, next_change, subscriber
from tests.conftest import LiveServer


def recorded(path: Path) -> tuple[int, list[str]]:
    """The revision and policy-ids the state file holds."""
    data = json.loads(path.read_text())
    return data["revision"], sorted(data["policies"])


async def subscription_revision(client: httpx.AsyncClient) -> int:
    answer = await client.get(f"/decision/v1/subscription/{SUBSCRIBER}")
    revision: int = answer.json()["revision"]
    return revision


async def test_a_restart_reports_a_true_delta(
    server: LiveServer, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """With a state file, a component restarted after changes it missed gets one change
    against what it had applied (added, updated and removed), not "everything added".
    """
    state = tmp_path / "state" / "tca-1.json"
    await push(client, tosca("onap.a"), tosca("onap.b"))
    async with subscriber(server.url, state_file=state) as sub:
        assert (sub.policies, sub.revision) == ({}, -1)  # a first run holds nothing
        first = await next_change(sub.changes())
        assert (ids(first.added), first.event) == (["onap.a", "onap.b"], "subscribe")
        await sub.ack()
    assert recorded(state) == (first.revision, ["onap.a", "onap.b"])

    # While the component is down: onap.b is updated, onap.a undeployed, onap.c deployed.
    await push(client, tosca("onap.b", "2.0.0"), tosca("onap.c"))
    await undeploy(client, "onap.a")

    async with subscriber(server.url, state_file=state) as sub:
        assert (ids(sub.policies), sub.revision) == (["onap.a", "onap.b"], first.revision)
        change = await next_change(sub.changes())
        assert change.revision == await subscription_revision(client)
        assert ids(change.added) == ["onap.c"]
        assert ids(change.updated) == ["onap.b"]
        assert change.removed == {"onap.a"}
        await sub.ack()
    assert recorded(state) == (change.revision, ["onap.b", "onap.c"])


async def test_a_change_not_applied_before_a_crash_comes_again(
    server: LiveServer, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """A change the component received but never applied is not in the state file, so the
    restarted component gets it again.
    """
    state = tmp_path / "tca-1.json"
    async with subscriber(server.url, state_file=state) as sub:
        pushed = await push(client, tosca("onap.a"))
        change = await next_change(sub.changes())
        assert ids(change.added) == ["onap.a"]
        # ... and the component dies before it asks for the next change.
    assert not state.exists() or recorded(state)[1] == []

    async with subscriber(server.url, state_file=state) as sub:
        again = await next_change(sub.changes())
    assert ids(again.added) == ["onap.a"]
    assert again.revision > pushed["revision"]  # recomputed from the new subscribe answer


async def test_a_state_file_of_something_else_is_refused(
    server: LiveServer, tmp_path: Path
) -> None:
    """A state file that is not JSON, or belongs to another subscriber, raises
    StateFileError naming it before anything is sent.
    """
    state = tmp_path / "state.json"
    state.write_text("{half")
    with pytest.raises(StateFileError, match="not JSON") as caught:
        async with subscriber(server.url, state_file=state):
            pytest.fail("entered with a broken state file")
    assert caught.value.path == str(state)
    StateFile(state, "dcae-other").save(Snapshot(3, {}))
    with pytest.raises(StateFileError, match="dcae-other"):
        async with subscriber(server.url, state_file=state):
            pytest.fail("entered with another subscriber's state file")


def test_a_save_replaces_the_file_whole(tmp_path: Path) -> None:
    """A save writes the whole snapshot through a temporary file renamed over the old one,
    and leaves no temporary file behind.
    """
    path = tmp_path / "s.json"
    state = StateFile(path, "tca-1")
    assert state.load() is None
    state.save(Snapshot(4, {"onap.a": tosca("onap.a")}, "update"))
    state.save(Snapshot(7, {"onap.b": tosca("onap.b")}, "update"))
    loaded = state.load()
    assert loaded is not None
    assert (loaded.revision, ids(loaded.policies)) == (7, ["onap.b"])
    assert json.loads(path.read_text())["format"] == FORMAT
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]
