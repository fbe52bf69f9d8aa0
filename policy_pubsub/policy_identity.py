"""A ToscaPolicy's identity: its id and its version, read by one rule everywhere.

The rule is ONAP's. The PAP names a policy by its TOSCA ``name`` and ``version`` (a
``ToscaConceptIdentifier``, e.g. ``onap.restart.tca`` ``1.0.0``): PDP_UPDATE undeploys, the
policies a PDP_STATUS lists and the version the server stores use those two. ONAP's policy-api
writes ``metadata.policy-id`` and ``metadata.policy-version`` from them, so they are only a
fallback here: El Alto's policy-api wrote the major version alone (``"policy-version": "1"``
beside ``"version": "1.0.0"``), and that "1" is not the version the PAP means.

- The id is ``name``, else ``metadata.policy-id``. The server refuses a policy whose two differ
  (ONAP's policy-api makes them equal), so the id is also the key of the decision API's and a
  snapshot's ``policies`` map, which ONAP keys by ``metadata.policy-id``.
- The version is ``version``, else ``metadata.policy-version``, as a string (ONAP writes
  versions as strings or integers).

A field that is missing or null falls back to the next one; when none is there the answer is
None. :func:`filled_metadata` fills a missing ``metadata.policy-id`` / ``policy-version`` from
the id and version, as policy-api does. The server refuses a policy without an id and a
version, so a policy read back from it always has them; the CLI and the SDK also meet policies
that were never checked (files, messages), and show a missing version as ``UNKNOWN_VERSION``.

The module needs nothing beyond the standard library: the component SDK ships it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "UNKNOWN_VERSION",
    "choose_id",
    "choose_version",
    "filled_metadata",
    "policy_id",
    "policy_version",
    "version_label",
]

UNKNOWN_VERSION = "?"  # how a policy without any version is shown

METADATA_ID = "policy-id"
METADATA_VERSION = "policy-version"


def choose_id(name: object, metadata_id: object) -> str | None:
    """The id from its two candidate fields: ``name``, else ``metadata.policy-id``; None when
    neither is a string.
    """
    if isinstance(name, str):
        return name
    return metadata_id if isinstance(metadata_id, str) else None


def choose_version(version: object, metadata_version: object) -> str | None:
    """The version from its two candidate fields: ``version``, else
    ``metadata.policy-version``, as a string; None when both are missing or null.
    """
    if version is not None:
        return str(version)
    return None if metadata_version is None else str(metadata_version)


def policy_id(policy: Mapping[str, Any]) -> str | None:
    """The id of a ToscaPolicy given as JSON (see the module docstring)."""
    return choose_id(policy.get("name"), _metadata(policy).get(METADATA_ID))


def policy_version(policy: Mapping[str, Any]) -> str | None:
    """The version of a ToscaPolicy given as JSON (see the module docstring)."""
    return choose_version(policy.get("version"), _metadata(policy).get(METADATA_VERSION))


def version_label(policy: Mapping[str, Any]) -> str:
    """The version to show a person: ``policy_version``, or ``UNKNOWN_VERSION`` if none."""
    version = policy_version(policy)
    return UNKNOWN_VERSION if version is None else version


def filled_metadata(policy: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the policy whose ``metadata`` has ``policy-id`` and ``policy-version``: each
    one missing or null is set from the id and the version, as ONAP's policy-api sets them;
    one given is kept as given. A policy without an id or a version is copied unchanged.
    """
    copy = dict(policy)
    found_id, found_version = policy_id(policy), policy_version(policy)
    if found_id is None or found_version is None:
        return copy
    metadata = dict(_metadata(policy))
    if metadata.get(METADATA_ID) is None:
        metadata[METADATA_ID] = found_id
    if metadata.get(METADATA_VERSION) is None:
        metadata[METADATA_VERSION] = found_version
    copy["metadata"] = metadata
    return copy


def _metadata(policy: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = policy.get("metadata")
    return metadata if isinstance(metadata, Mapping) else {}
