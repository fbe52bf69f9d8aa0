"""A ToscaPolicy's identity: its id and its version, read by one rule everywhere.

The rule is the server's (``models.ToscaPolicy``): the id is ``metadata.policy-id``, else the
TOSCA ``name``; the version is ``metadata.policy-version``, else ``version``, as a string (ONAP
writes versions as strings or integers). A field that is missing or null falls back to the
next one; when none is there the answer is None. The server refuses a policy without both, so
a policy read back from it always has them; the CLI and the SDK also meet policies that were
never checked (files, messages), and show a missing version as ``UNKNOWN_VERSION``.

The module needs nothing beyond the standard library: the component SDK ships it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "UNKNOWN_VERSION",
    "choose_id",
    "choose_version",
    "policy_id",
    "policy_version",
    "version_label",
]

UNKNOWN_VERSION = "?"  # how a policy without any version is shown


def choose_id(metadata_id: object, name: object) -> str | None:
    """The id from its two candidate fields: ``metadata.policy-id``, else ``name``; None when
    neither is a string.
    """
    if isinstance(metadata_id, str):
        return metadata_id
    return name if isinstance(name, str) else None


def choose_version(metadata_version: object, version: object) -> str | None:
    """The version from its two candidate fields: ``metadata.policy-version``, else
    ``version``, as a string; None when both are missing or null.
    """
    if metadata_version is not None:
        return str(metadata_version)
    return None if version is None else str(version)


def policy_id(policy: Mapping[str, Any]) -> str | None:
    """The id of a ToscaPolicy given as JSON (see the module docstring)."""
    metadata = _metadata(policy)
    return choose_id(metadata.get("policy-id"), policy.get("name"))


def policy_version(policy: Mapping[str, Any]) -> str | None:
    """The version of a ToscaPolicy given as JSON (see the module docstring)."""
    metadata = _metadata(policy)
    return choose_version(metadata.get("policy-version"), policy.get("version"))


def version_label(policy: Mapping[str, Any]) -> str:
    """The version to show a person: ``policy_version``, or ``UNKNOWN_VERSION`` if none."""
    version = policy_version(policy)
    return UNKNOWN_VERSION if version is None else version


def _metadata(policy: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = policy.get("metadata")
    return metadata if isinstance(metadata, Mapping) else {}
