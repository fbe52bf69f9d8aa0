"""A ToscaPolicy's id and version: one rule, the server's, for the server, the SDK and the CLI."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from policy_pubsub.models import ToscaPolicy
from policy_pubsub.policy_identity import (
    UNKNOWN_VERSION,
    policy_id,
    policy_version,
    version_label,
)
from tests.strategies import policy_ids

TYPE = "onap.policies.monitoring.tcagen2"


def test_metadata_comes_before_name_and_version() -> None:
    """``metadata.policy-id`` and ``metadata.policy-version`` win over ``name`` and
    ``version``; an integer version is read as its string.
    """
    policy = {
        "type": TYPE,
        "name": "tosca.name",
        "version": "1.0.0",
        "metadata": {"policy-id": "meta.id", "policy-version": 2},
    }
    assert (policy_id(policy), policy_version(policy)) == ("meta.id", "2")


def test_missing_or_null_metadata_falls_back() -> None:
    """A missing or null metadata field falls back to ``name`` / ``version``; with neither
    the answer is None, shown as ``UNKNOWN_VERSION``.
    """
    policy = {"type": TYPE, "name": "n", "version": 3, "metadata": {"policy-id": None}}
    assert (policy_id(policy), policy_version(policy)) == ("n", "3")
    bare: dict[str, Any] = {"type": TYPE, "metadata": "not an object"}
    assert (policy_id(bare), policy_version(bare), version_label(bare)) == (
        None,
        None,
        UNKNOWN_VERSION,
    )


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
    except ValidationError:
        # The server refuses a policy it cannot name: the JSON rule finds no id or version.
        assert policy_id(policy) is None or policy_version(policy) is None
        return
    assert (model.policy_id, model.policy_version) == (policy_id(policy), policy_version(policy))
