"""Wire models of API.md, validated with pydantic.

Requests are parsed strictly (no type coercion, unknown fields refused) except where ONAP
sends more than we read: a ToscaPolicy keeps every field as given, and a PDP_UPDATE may carry
the PAP's bookkeeping fields.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StrictStr,
    StringConstraints,
    field_validator,
    model_validator,
)

from policy_pubsub import constants
from policy_pubsub.policy_identity import choose_id, choose_version, filled_metadata

# Outer safety nets, as in schemas/v1; the settings' caps (max_filters_per_subscription,
# max_ids_per_filter, max_policies_per_push) are checked by the API and may only be lower.
MAX_IDS_PER_FILTER = 10_000
MAX_FILTERS = 1000
MAX_POLICIES = 100_000
MAX_TEXT = 1024

# The start of the refusal of a policy whose name and metadata.policy-id differ.
NAME_MISMATCH = "the policy's name and metadata.policy-id differ"


def _filter_value(value: Any) -> str | list[str]:
    """One string or a non-empty list of strings; one clear message for anything else."""
    if isinstance(value, str) and 0 < len(value) <= MAX_TEXT:
        return value
    if (
        isinstance(value, list)
        and 0 < len(value) <= MAX_IDS_PER_FILTER
        and all(isinstance(item, str) and 0 < len(item) <= MAX_TEXT for item in value)
    ):
        return value
    raise ValueError(
        f"must be a non-empty string or a list of 1 to {MAX_IDS_PER_FILTER} non-empty strings "
        f"(at most {MAX_TEXT} characters each)"
    )


def _no_nul(value: str) -> str:
    """Refuses U+0000 in a string the store keeps in a column: PostgreSQL text cannot hold it,
    so it is refused on every store alike (as in schemas/v1).
    """
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000)")
    return value


def _version(value: Any) -> str | int:
    """ONAP sends policy versions as strings or integers; either is kept as given."""
    if isinstance(value, str) and 0 < len(value) <= 255:
        return _no_nul(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError("must be a non-empty string or an integer")


NonEmptyStr = Annotated[StrictStr, StringConstraints(min_length=1, max_length=MAX_TEXT)]
FilterValue = Annotated[str | list[str], PlainValidator(_filter_value)]
PolicyId = Annotated[StrictStr, StringConstraints(pattern=constants.POLICY_ID_PATTERN)]
Topic = Annotated[StrictStr, StringConstraints(pattern=constants.TOPIC_PATTERN)]
# Subscribers named in one dead-letter retry.
MAX_RETRY = 10_000
SubscriberId = Annotated[StrictStr, StringConstraints(pattern=constants.SUBSCRIBER_ID_PATTERN)]
Version = Annotated[str | int, PlainValidator(_version)]
ColumnStr = Annotated[StrictStr, AfterValidator(_no_nul)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=False, frozen=True)


class PolicyFilter(_Strict):
    """A decision-API ``resource``: policy ids and/or policy types; ``*`` at the end is a prefix."""

    policy_id: FilterValue | None = Field(None, alias="policy-id")
    policy_type: FilterValue | None = Field(None, alias="policy-type")

    @model_validator(mode="after")
    def _one_key(self) -> PolicyFilter:
        if self.policy_id is None and self.policy_type is None:
            raise ValueError("a policy filter needs 'policy-id' or 'policy-type'")
        return self

    def ids(self) -> list[str]:
        return _as_list(self.policy_id)

    def types(self) -> list[str]:
        return _as_list(self.policy_type)

    def to_wire(self) -> dict[str, Any]:
        """``model_dump(by_alias=True, exclude_none=True)``, without pydantic's walk: the
        decision API makes one of each filter of each request.
        """
        wire: dict[str, Any] = {}
        if self.policy_id is not None:
            wire["policy-id"] = _copied(self.policy_id)
        if self.policy_type is not None:
            wire["policy-type"] = _copied(self.policy_type)
        return wire


def _copied(value: str | list[str]) -> str | list[str]:
    return value if isinstance(value, str) else list(value)


def _as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


FilterList = Annotated[list[PolicyFilter], Field(min_length=1, max_length=MAX_FILTERS)]


class PolicyMetadata(BaseModel):
    model_config = ConfigDict(extra="allow")

    policy_id: PolicyId | None = Field(None, alias="policy-id")
    policy_version: Version | None = Field(None, alias="policy-version")


class ToscaPolicy(BaseModel):
    """A policy as ONAP deploys it. Only identity, type and version are read; the rest is kept.

    The identity is ONAP's (see ``policy_identity``): ``name`` and ``version``, else
    ``metadata.policy-id`` and ``metadata.policy-version``. A ``name`` and a
    ``metadata.policy-id`` that differ are refused: ONAP's policy-api writes the second from
    the first, and a PDP that answered the PAP under one and components under the other would
    be two policies at once.
    """

    model_config = ConfigDict(extra="allow")

    type: Annotated[NonEmptyStr, AfterValidator(_no_nul)]
    type_version: ColumnStr | None = None
    name: PolicyId | None = None
    version: Version | None = None
    metadata: PolicyMetadata | None = None
    properties: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _identity(self) -> ToscaPolicy:
        if self.policy_id is None:
            raise ValueError("a policy needs 'name' or 'metadata.policy-id'")
        if self.policy_version is None:
            raise ValueError("a policy needs 'version' or 'metadata.policy-version'")
        metadata_id = None if self.metadata is None else self.metadata.policy_id
        if self.name is not None and metadata_id is not None and metadata_id != self.name:
            raise ValueError(
                f"{NAME_MISMATCH}: 'name' is {self.name!r}, 'metadata.policy-id' "
                f"{metadata_id!r} (ONAP's policy-api sets metadata.policy-id to the name)"
            )
        return self

    @property
    def policy_id(self) -> str | None:
        """``name``, else ``metadata.policy-id`` (the rule of ``policy_identity``)."""
        metadata_id = None if self.metadata is None else self.metadata.policy_id
        return choose_id(self.name, metadata_id)

    @property
    def policy_version(self) -> str | None:
        """``version``, else ``metadata.policy-version``, as a string."""
        metadata_version = None if self.metadata is None else self.metadata.policy_version
        return choose_version(self.version, metadata_version)

    def body(self) -> dict[str, Any]:
        """The policy as given, with ``metadata.policy-id`` and ``policy-version`` filled in
        where missing, as ONAP's policy-api fills them.
        """
        return filled_metadata(self.model_dump(by_alias=True, exclude_unset=True))


PolicyList = Annotated[list[ToscaPolicy], Field(max_length=MAX_POLICIES)]


def _no_duplicate_ids(policies: list[ToscaPolicy] | None) -> list[ToscaPolicy] | None:
    seen: set[str] = set()
    for index, policy in enumerate(policies or ()):
        policy_id = policy.policy_id or ""
        if policy_id in seen:
            raise ValueError(f"policy-id {policy_id!r} appears twice (item {index})")
        seen.add(policy_id)
    return policies


class SubscriptionRequest(_Strict):
    """The body of ``POST /decision/v1/subscription/{subscriber_id}``."""

    subscriber_topic: Topic
    action: StrictStr = constants.ACTION_CONFIGURE
    onap_name: StrictStr | None = Field(None, alias="ONAPName")
    onap_component: StrictStr | None = Field(None, alias="ONAPComponent")
    onap_instance: StrictStr | None = Field(None, alias="ONAPInstance")
    policy_filters: FilterList = Field(alias="policy-filters")
    return_policies: StrictBool = Field(True, alias="return-policies")

    @field_validator("action")
    @classmethod
    def _configure_only(cls, value: str) -> str:
        if value != constants.ACTION_CONFIGURE:
            raise ValueError(f"No application for action {value}")
        return value


class DecisionRequest(_Strict):
    """The body of ``POST /policy/pdpx/v1/decision`` (and ``/decision/v1``)."""

    onap_name: StrictStr | None = Field(None, alias="ONAPName")
    onap_component: StrictStr | None = Field(None, alias="ONAPComponent")
    onap_instance: StrictStr | None = Field(None, alias="ONAPInstance")
    request_id: StrictStr | None = Field(None, alias="requestId")
    action: StrictStr = constants.ACTION_CONFIGURE
    context: dict[str, Any] | None = None
    resource: PolicyFilter | None = None
    policy_filters: FilterList | None = Field(None, alias="policy-filters")

    @model_validator(mode="after")
    def _one_selector(self) -> DecisionRequest:
        if (self.resource is None) == (self.policy_filters is None):
            raise ValueError("give exactly one of 'resource' or 'policy-filters'")
        return self

    def filters(self) -> list[PolicyFilter]:
        if self.resource is not None:
            return [self.resource]
        return list(self.policy_filters or ())


class PolicyPush(_Strict):
    """The body of ``POST /pap/v1/policies``."""

    policies: Annotated[PolicyList, Field(min_length=1)]

    _unique = field_validator("policies")(_no_duplicate_ids)


class PolicyIdent(_Strict):
    """A policy named for undeployment in a PDP_UPDATE: ONAP's ``ToscaConceptIdentifier``,
    the TOSCA name and version. Without a version, whichever version is deployed.
    """

    name: PolicyId
    version: Version | None = None


IdentList = Annotated[list[PolicyIdent], Field(max_length=MAX_POLICIES)]
OptionalText = StrictStr | None


def _non_negative(value: Any) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value
    raise ValueError("must be a non-negative integer (milliseconds)")


Millis = Annotated[int | None, PlainValidator(_non_negative)]


class PdpUpdate(BaseModel):
    """An ONAP PDP_UPDATE (onap/policy-models ``PdpUpdate``), as every PAP release sends it.

    - El Alto to Guilin: ``policies``, the complete set the PDP's subgroup should have.
    - Honolulu: ``policies`` (still the complete set) and the delta that led to it,
      ``policiesToBeDeployed`` / ``policiesToBeUndeployed``. Its PDPs applied the complete set.
    - Istanbul on: the delta alone, plus ``source``.

    So ``policies``, when given, is the desired set and wins; the delta is applied when it is
    alone (see ``PolicyService.pdp_update``). The PdpMessage fields (``requestId``,
    ``timestampMs``, ``name``, ``pdpGroup``, ``pdpSubgroup``) and ``description``,
    ``pdpHeartbeatIntervalMs`` and ``source`` are read for the answer and the PDP's channel;
    fields later releases may add are accepted and ignored.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    message_name: StrictStr = Field("PDP_UPDATE", alias="messageName")
    request_id: OptionalText = Field(None, alias="requestId")
    timestamp_ms: Millis = Field(None, alias="timestampMs")
    name: OptionalText = None
    pdp_group: OptionalText = Field(None, alias="pdpGroup")
    pdp_subgroup: OptionalText = Field(None, alias="pdpSubgroup")
    description: OptionalText = None
    source: OptionalText = None
    pdp_heartbeat_interval_ms: Millis = Field(None, alias="pdpHeartbeatIntervalMs")
    policies: PolicyList | None = None
    policies_to_be_deployed: PolicyList | None = Field(None, alias="policiesToBeDeployed")
    policies_to_be_undeployed: IdentList | None = Field(None, alias="policiesToBeUndeployed")

    _unique = field_validator("policies", "policies_to_be_deployed")(_no_duplicate_ids)

    @field_validator("message_name")
    @classmethod
    def _is_update(cls, value: str) -> str:
        if value != "PDP_UPDATE":
            raise ValueError(f"expected messageName 'PDP_UPDATE', got {value!r}")
        return value


class DeadLetterRetry(_Strict):
    """``POST /dead-letters/retry``: the subscribers to send a fresh snapshot to (their dead
    letters are removed); absent: every subscriber with a dead letter.
    """

    subscriber_ids: list[SubscriberId] | None = Field(None, min_length=1, max_length=MAX_RETRY)
