"""The subscription record: who subscribes, to which topic, with which policy filters.

One record, two wire shapes (API.md):

- ``to_wire()``: the record as the server stores and answers it, and as every snapshot
  message begins: ``subscriber_id`` first, the ``ONAP*`` fields present (null when not given);
- ``subscribe_body()``: the body of ``POST /decision/v1/subscription/{subscriber_id}``,
  which names the subscriber in its path and leaves out the ``ONAP*`` fields not given.

``from_wire`` reads a record back from an answer (``GET`` or ``POST`` of a subscription),
ignoring what the server adds to it (``revision``, ``status``, ``policies``). The module needs
nothing beyond the standard library and the wire constants: the component SDK ships it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from policy_pubsub import constants

__all__ = ["SubscriptionRecord"]

_ONAP_FIELDS = ("ONAPName", "ONAPComponent", "ONAPInstance")


@dataclass(frozen=True, slots=True)
class SubscriptionRecord:
    """One subscription as API.md defines it. Filters are kept as given (wire dicts); the
    server validates them, this type only carries them.
    """

    subscriber_id: str
    subscriber_topic: str
    policy_filters: tuple[dict[str, Any], ...]
    action: str = constants.ACTION_CONFIGURE
    onap_name: str | None = None
    onap_component: str | None = None
    onap_instance: str | None = None

    @classmethod
    def make(
        cls,
        subscriber_id: str,
        subscriber_topic: str,
        policy_filters: Sequence[Mapping[str, Any]],
        *,
        action: str = constants.ACTION_CONFIGURE,
        onap_name: str | None = None,
        onap_component: str | None = None,
        onap_instance: str | None = None,
    ) -> SubscriptionRecord:
        """A record whose filters are copies of ``policy_filters`` (one level deep)."""
        return cls(
            subscriber_id,
            subscriber_topic,
            tuple(dict(f) for f in policy_filters),
            action,
            onap_name,
            onap_component,
            onap_instance,
        )

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> SubscriptionRecord:
        """The record in a server's answer; ``ValueError`` naming the first field that is
        missing or of the wrong type. Fields the server adds to the record are ignored.
        """
        subscriber_id = data.get("subscriber_id")
        topic = data.get("subscriber_topic")
        filters = data.get("policy-filters")
        action = data.get("action", constants.ACTION_CONFIGURE)
        for name, value in (
            ("subscriber_id", subscriber_id),
            ("subscriber_topic", topic),
            ("action", action),
        ):
            if not isinstance(value, str):
                raise ValueError(f"the subscription record's {name} is not a string")
        if not isinstance(filters, list) or not all(isinstance(f, dict) for f in filters):
            raise ValueError("the subscription record's policy-filters is not a list of objects")
        onap = [data.get(key) for key in _ONAP_FIELDS]
        for key, value in zip(_ONAP_FIELDS, onap, strict=True):
            if value is not None and not isinstance(value, str):
                raise ValueError(f"the subscription record's {key} is not a string")
        return cls(
            str(subscriber_id),
            str(topic),
            tuple(filters),
            str(action),
            *onap,
        )

    def _onap(self) -> dict[str, str | None]:
        return dict(
            zip(
                _ONAP_FIELDS,
                (self.onap_name, self.onap_component, self.onap_instance),
                strict=True,
            )
        )

    def to_wire(self) -> dict[str, Any]:
        """The record as stored and answered: every field, ``subscriber_id`` first."""
        return {
            "subscriber_id": self.subscriber_id,
            "subscriber_topic": self.subscriber_topic,
            "action": self.action,
            **self._onap(),
            "policy-filters": [dict(f) for f in self.policy_filters],
        }

    def subscribe_body(self, *, return_policies: bool = True) -> dict[str, Any]:
        """The body that subscribes with this record (insert or update)."""
        return {
            "subscriber_topic": self.subscriber_topic,
            "action": self.action,
            **self._given_onap(),
            "policy-filters": [dict(f) for f in self.policy_filters],
            "return-policies": return_policies,
        }

    def _given_onap(self) -> dict[str, str]:
        return {key: value for key, value in self._onap().items() if value is not None}
