"""Changes between snapshots, and reading snapshots out of a poll's messages."""

from __future__ import annotations

import json

from policy_pubsub.client import PolicyChange, Snapshot, policy_version
from policy_pubsub.client.changes import snapshots
from tests.api.helpers import tosca


def test_a_change_is_computed_against_what_is_held() -> None:
    """Added, updated and removed compare the new snapshot with the held one by policy-id
    and content; an identical policy is not an update.
    """
    held = Snapshot(3, {"a": tosca("a"), "b": tosca("b"), "c": tosca("c")})
    new = Snapshot(9, {"a": tosca("a"), "b": tosca("b", "2"), "d": tosca("d")}, "resync")
    change = PolicyChange.between(held, new)
    assert (change.revision, change.event) == (9, "resync")
    assert list(change.added) == ["d"]
    assert list(change.updated) == ["b"]
    assert change.removed == {"c"}
    assert change.policies == new.policies
    assert policy_version(change.previous["b"]) == "1.0.0"
    assert policy_version(change.updated["b"]) == "2"
    assert not change.empty
    assert PolicyChange.between(new, Snapshot(10, dict(new.policies))).empty


def test_snapshots_are_read_from_strings_and_objects() -> None:
    """A poll answer may hold JSON strings (DMaaP), objects, or strings encoded twice; only
    this subscriber's well-formed snapshots come out, in order.
    """
    mine = {"subscriber_id": "s", "revision": 5, "event": "update", "policies": {"a": tosca("a")}}
    messages = [
        json.dumps(mine),
        json.dumps(json.dumps({**mine, "revision": 6})),
        {**mine, "revision": 7},
        json.dumps({**mine, "subscriber_id": "t", "revision": 8}),
        json.dumps({**mine, "revision": "9"}),
        json.dumps({**mine, "revision": 10, "policies": {"a": "not a policy"}}),
        "not json",
        42,
        json.dumps([mine]),
    ]
    found = list(snapshots(messages, "s"))
    assert [s.revision for s in found] == [5, 6, 7]
    assert all(list(s.policies) == ["a"] for s in found)
