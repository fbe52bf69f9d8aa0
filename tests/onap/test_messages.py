"""Who a PAP message is for, and where the PAP's topic is."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from policy_pubsub.config import Settings
from policy_pubsub.onap.messages import Addressing
from policy_pubsub.onap.topic import PapTopic

ME = ("pdp-1", "defaultGroup", "policy-pubsub")


@pytest.mark.parametrize(
    ("message", "assigned", "applies"),
    [
        ({"name": "pdp-1"}, ME, True),
        ({"name": "pdp-1", "pdpGroup": "otherGroup"}, ME, True),  # the name decides
        ({"name": "pdp-2", "pdpGroup": "defaultGroup"}, ME, False),
        ({"pdpGroup": "defaultGroup"}, ME, True),
        ({"pdpGroup": "defaultGroup", "pdpSubgroup": "policy-pubsub"}, ME, True),
        ({"pdpGroup": "defaultGroup", "pdpSubgroup": "xacml"}, ME, False),
        ({"pdpGroup": "otherGroup"}, ME, False),
        ({}, ME, False),
        ({"pdpGroup": "defaultGroup"}, ("pdp-1", "defaultGroup", None), False),  # unassigned
        ({"name": 7, "pdpGroup": "defaultGroup"}, ME, True),  # a non-string name is none
    ],
)
def test_addressing_follows_onap(
    message: dict[str, object], assigned: tuple[str, str, str | None], applies: bool
) -> None:
    """A message applies to a PDP by its name, else as a broadcast to its group and subgroup,
    and no broadcast applies to a PDP without a subgroup (ONAP's PdpMessage.appliesTo).
    """
    assert Addressing.of(message).applies_to(*assigned) is applies


@pytest.mark.parametrize(
    ("url", "mr_url", "topic"),
    [
        ("embedded", None, "POLICY-PDP-PAP"),
        ("embedded/MY-PAP", None, "MY-PAP"),
        ("dmaap+http://mr:3904", "dmaap+http://mr:3904", "POLICY-PDP-PAP"),
        ("dmaap+https://u:p@mr:3905/POLICY-PDP-PAP", "dmaap+https://u:p@mr:3905", "POLICY-PDP-PAP"),
        ("dmaap+http://mr/prefix/T", "dmaap+http://mr/prefix", "T"),
    ],
)
def test_pap_topic_urls(url: str, mr_url: str | None, topic: str) -> None:
    """The PAP topic URL names the server's own router or an MR, and the topic last."""
    assert PapTopic.parse(url) == PapTopic(mr_url, topic)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("kafka://k:9092/POLICY-PDP-PAP", "Kafka is not a transport"),
        ("embedded/a/b", "names no valid topic"),
        ("dmaap+http://mr/T?x=1", "no query"),
        ("nats://n", "must be 'embedded'"),
    ],
)
def test_settings_refuse_other_pap_topic_urls(url: str, reason: str) -> None:
    """Kafka, NATS and malformed topic URLs stop the settings with the reason."""
    with pytest.raises(ValidationError, match=reason):
        Settings(pap_topic_url=url)
