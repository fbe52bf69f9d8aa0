"""A ToscaPolicy's id and version: one rule, ONAP's, for the server, the SDK and the CLI."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from policy_pubsub.models import NAME_MISMATCH, ToscaPolicy
from policy_pubsub.policy_identity import (
    UNKNOWN_VERSION,
    filled_metadata,
    policy_id,
    policy_version,
    version_label,
)
from tests.strategies import policy_ids

TYPE = "onap.policies.monitoring.tcagen2"


def test_the_tosca_name_and_version_come_before_metadata() -> None:
    """``name`` and ``version`` win over ``metadata``, as ONAP's PAP names policies: an El
    Alto policy with ``policy-version: "1"`` is version ``1.0.0``; an integer version is read
    as its string.
    """
    el_alto = {
        "type": TYPE,
        "name": "onap.restart.tca",
        "version": "1.0.0",
        "metadata": {"policy-id": "onap.restart.tca", "policy-version": "1"},
    }
    assert (policy_id(el_alto), policy_version(el_alto)) == ("onap.restart.tca", "1.0.0")
    assert policy_version({"type": TYPE, "version": 2}) == "2"


def test_missing_or_null_fields_fall_back_to_metadata() -> None:
    """A missing or null ``name`` / ``version`` falls back to the metadata; with neither the
    answer is None, shown as ``UNKNOWN_VERSION``.
    """
    policy = {"type": TYPE, "name": None, "metadata": {"policy-id": "m", "policy-version": 3}}
    assert (policy_id(policy), policy_version(policy)) == ("m", "3")
    bare: dict[str, Any] = {"type": TYPE, "metadata": "not an object"}
    assert (policy_id(bare), policy_version(bare), version_label(bare)) == (
        None,
        None,
        UNKNOWN_VERSION,
    )


def test_missing_metadata_is_filled_and_given_metadata_kept() -> None:
    """``filled_metadata`` sets a missing or null ``policy-id`` / ``policy-version`` from the
    name and version, as policy-api does, keeps what is given (El Alto's "1" too) and the
    other metadata, and leaves the policy it copies alone.
    """
    bare = {"type": TYPE, "name": "p", "version": "1.0.0"}
    assert filled_metadata(bare)["metadata"] == {"policy-id": "p", "policy-version": "1.0.0"}
    assert "metadata" not in bare
    partial = {**bare, "metadata": {"policy-version": "1", "policy-id": None, "other": 1}}
    assert filled_metadata(partial)["metadata"] == {
        "policy-version": "1",
        "policy-id": "p",
        "other": 1,
    }
    nameless = {"type": TYPE, "version": "1.0.0"}
    assert filled_metadata(nameless) == nameless


def test_the_server_refuses_a_name_that_metadata_contradicts() -> None:
    """A policy whose ``name`` and ``metadata.policy-id`` differ is refused by the server's
    model, with both in the message; equal ones, or one of them alone, are accepted.
    """
    with pytest.raises(ValidationError, match=NAME_MISMATCH + ".*'a'.*'b'"):
        ToscaPolicy.model_validate(
            {"type": TYPE, "name": "a", "version": "1", "metadata": {"policy-id": "b"}}
        )
    for metadata in ({"policy-id": "a"}, {}, {"policy-id": None}):
        model = ToscaPolicy.model_validate(
            {"type": TYPE, "name": "a", "version": "1", "metadata": metadata}
        )
        assert model.policy_id == "a"


optional_ids = st.none() | policy_ids()
optional_versions = st.none() | st.sampled_from(["1.0.0", "1", "2.0"]) | st.integers(0, 9)


@given(optional_ids, optional_versions, optional_ids, optional_versions, st.booleans())
def test_the_json_rule_is_the_servers_rule(
    name: str | None,
    version: str | int | None,
    metadata_id: str | None,
    metadata_version: str | int | None,
    with_metadata: bool,
) -> None:
    """For any mix of present, null and missing fields, the JSON functions the SDK and the
    CLI use agree with the server's validated ``ToscaPolicy``.
    """
    policy: dict[str, Any] = {"type": TYPE}
    for key, value in (("name", name), ("version", version)):
        if value is not None:
            policy[key] = value
    if with_metadata:
        policy["metadata"] = {"policy-id": metadata_id, "policy-version": metadata_version}
    try:
        model = ToscaPolicy.model_validate(policy)
    except ValidationError as exc:
        # The server refuses a policy it cannot name (the JSON rule finds no id or version),
        # or one whose name and metadata.policy-id differ.
        named = name is not None and with_metadata and metadata_id not in (None, name)
        assert named or policy_id(policy) is None or policy_version(policy) is None, exc
        return
    assert (model.policy_id, model.policy_version) == (policy_id(policy), policy_version(policy))
