"""The subscription record: the stored shape, the subscribe body, the decision body."""

from __future__ import annotations

import httpx
import pytest

from policy_pubsub.subscription_record import SubscriptionRecord
from tests.conftest import LiveServer

FILTERS = [{"policy-id": ["onap.scaleout.tca", "onap.restart.tca"]}]


def test_the_wire_record_names_every_field_in_api_order() -> None:
    """``to_wire`` is the stored record of API.md: subscriber_id first, every ONAP field
    present (null when not given), and ``from_wire`` reads it back unchanged.
    """
    record = SubscriptionRecord.make("tca-1", "t1", FILTERS, onap_name="DCAE")
    wire = record.to_wire()
    assert list(wire) == [
        "subscriber_id",
        "subscriber_topic",
        "action",
        "ONAPName",
        "ONAPComponent",
        "ONAPInstance",
        "policy-filters",
    ]
    assert (wire["ONAPName"], wire["ONAPComponent"]) == ("DCAE", None)
    assert SubscriptionRecord.from_wire({**wire, "revision": 3, "status": {}}) == record


def test_the_bodies_leave_out_what_was_not_given() -> None:
    """The subscribe body carries only the ONAP fields given, names no subscriber (the path
    does) and asks for the policies back.
    """
    record = SubscriptionRecord.make("tca-1", "t1", FILTERS, onap_instance="tca-1")
    assert record.subscribe_body() == {
        "subscriber_topic": "t1",
        "action": "configure",
        "ONAPInstance": "tca-1",
        "policy-filters": FILTERS,
        "return-policies": True,
    }


def test_the_filters_are_copies() -> None:
    """Changing the caller's filters after ``make`` or a body after it was built leaves the
    record as it was.
    """
    filters = [{"policy-id": "a"}]
    record = SubscriptionRecord.make("s", "t", filters)
    filters[0]["policy-id"] = "b"
    record.subscribe_body()["policy-filters"][0]["policy-id"] = "c"
    assert record.to_wire()["policy-filters"] == [{"policy-id": "a"}]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("subscriber_id", None),
        ("subscriber_topic", 7),
        ("policy-filters", {"policy-id": "a"}),
        ("policy-filters", ["a"]),
        ("ONAPName", 1),
    ],
)
def test_a_malformed_record_names_its_field(field: str, value: object) -> None:
    """``from_wire`` refuses a record with a missing or mistyped field, and says which."""
    wire = {**SubscriptionRecord.make("s", "t", FILTERS).to_wire(), field: value}
    with pytest.raises(ValueError, match=field):
        SubscriptionRecord.from_wire(wire)


async def test_the_server_stores_what_to_wire_says(server: LiveServer) -> None:
    """A subscribe with ``subscribe_body`` is answered and read back as ``to_wire``."""
    record = SubscriptionRecord.make("tca-1", "t1", FILTERS, onap_component="tca")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        answer = await http.post("/decision/v1/subscription/tca-1", json=record.subscribe_body())
        assert answer.status_code == 201
        stored = (await http.get("/decision/v1/subscription/tca-1")).json()
    for found in (answer.json(), stored):
        assert {key: found[key] for key in record.to_wire()} == record.to_wire()
        assert SubscriptionRecord.from_wire(found) == record
