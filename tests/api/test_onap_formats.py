"""ONAP's PDP_UPDATE of each PAP release, and policy identity as the PAP has it: the TOSCA
name and version, whatever ``metadata.policy-version`` says. The messages are the fixtures of
tests/fixtures/onap, one per release.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from policy_pubsub import schemas
from policy_pubsub.models import PdpUpdate
from tests.api.helpers import PDP_UPDATE, POLICIES, assert_onap_error, revision
from tests.conftest import LiveServer, make_settings, start_server, stop_server

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "onap"


def fixture(name: str) -> dict[str, Any]:
    """A message of tests/fixtures/onap, e.g. ``el-alto.pdp-update``."""
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[LiveServer]:
    """A server on a SQLite store (the store's side is tested in tests/store)."""
    live, task = await start_server(make_settings(tmp_path))
    try:
        yield live
    finally:
        await stop_server(live, task)


@pytest.fixture
async def client(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        yield http


async def update(client: httpx.AsyncClient, message: dict[str, Any]) -> dict[str, Any]:
    """Send a PDP_UPDATE; the PDP_STATUS answered, after checking it is a SUCCESS for it."""
    r = await client.post(PDP_UPDATE, json=message)
    assert r.status_code == 200, r.text
    status: dict[str, Any] = r.json()
    assert status["response"]["responseStatus"] == "SUCCESS"
    assert status["response"]["responseTo"] == message["requestId"]
    return status


def listed(status: dict[str, Any]) -> set[tuple[str, str]]:
    return {(p["name"], p["version"]) for p in status["policies"]}


async def test_el_alto_policies_are_known_by_their_tosca_version(
    client: httpx.AsyncClient,
) -> None:
    """El Alto's PDP_UPDATE deploys policies whose metadata says ``policy-version: "1"``: the
    PDP_STATUS lists them as version 1.0.0, as the PAP named them; the components get the
    metadata as given; and a current PAP's undeploy of ``onap.scaleout.tca`` 1.0.0 really
    undeploys it.
    """
    el_alto = fixture("el-alto.pdp-update")
    status = await update(client, el_alto)
    assert listed(status) == {("onap.restart.tca", "1.0.0"), ("onap.scaleout.tca", "1.0.0")}
    assert (status["pdpGroup"], status["pdpSubgroup"]) == ("defaultGroup", "policy-pubsub")
    shown = (await client.get(f"{POLICIES}/onap.restart.tca")).json()
    assert shown["metadata"] == {"policy-id": "onap.restart.tca", "policy-version": "1"}

    undeploy = {
        "messageName": "PDP_UPDATE",
        "requestId": "undeploy-1",
        "policiesToBeUndeployed": [{"name": "onap.scaleout.tca", "version": "1.0.0"}],
    }
    status = await update(client, undeploy)
    assert listed(status) == {("onap.restart.tca", "1.0.0")}
    assert "not deployed" not in status["response"]["responseMessage"]
    assert (await client.get(f"{POLICIES}/onap.scaleout.tca")).status_code == 404


async def test_honolulu_sends_the_complete_set_and_the_delta(
    server: LiveServer, client: httpx.AsyncClient
) -> None:
    """Honolulu's PDP_UPDATE carries the complete ``policies`` and the delta together: it is
    accepted, and the complete set is what is deployed after it. One whose delta contradicts
    its complete set is a 400 that changes nothing.
    """
    await update(client, fixture("el-alto.pdp-update"))
    honolulu = fixture("honolulu.pdp-update")
    status = await update(client, honolulu)
    assert listed(status) == {("onap.restart.tca", "2.0.0")}

    before = revision(server)
    contradiction = {**honolulu, "requestId": "r-2", "policies": []}
    r = await client.post(PDP_UPDATE, json=contradiction)
    body = assert_onap_error(r, 400)
    assert "onap.restart.tca 2.0.0 is in policiesToBeDeployed but not in policies" in body["error"]
    undeployed_but_listed = {
        **honolulu,
        "policiesToBeUndeployed": [{"name": "onap.restart.tca", "version": "2.0.0"}],
    }
    body = assert_onap_error(await client.post(PDP_UPDATE, json=undeployed_but_listed), 400)
    assert "onap.restart.tca is in policiesToBeUndeployed and in policies" in body["error"]
    assert revision(server) == before
    assert (await client.get(f"{POLICIES}/onap.restart.tca")).json()["version"] == "2.0.0"


async def test_istanbul_delta_and_an_undeploy_of_what_is_not_deployed(
    client: httpx.AsyncClient,
) -> None:
    """Istanbul's delta deploys and undeploys by name and version. An undeploy that names a
    version other than the deployed one, or a policy not deployed at all, leaves what is
    deployed and answers SUCCESS as ONAP's PDPs do, saying so in ``responseMessage`` while
    ``policies`` lists what is still deployed.
    """
    await update(client, fixture("honolulu.pdp-update"))  # onap.restart.tca 2.0.0
    istanbul = fixture("istanbul.pdp-update")  # undeploys onap.restart.tca 1.0.0
    status = await update(client, istanbul)
    assert listed(status) == {("onap.restart.tca", "2.0.0"), ("onap.vfirewall.tca", "1.0.0")}
    assert status["response"]["responseMessage"].endswith(
        "not deployed, so not undeployed: onap.restart.tca 1.0.0 (2.0.0 is deployed)"
    )

    gone = {
        "messageName": "PDP_UPDATE",
        "requestId": "r-3",
        "policiesToBeUndeployed": [{"name": "never.deployed", "version": "1.0.0"}],
    }
    status = await update(client, gone)
    assert status["response"]["responseMessage"] == (
        f"no change; revision {status['revision']}; "
        "not deployed, so not undeployed: never.deployed 1.0.0"
    )
    assert len(status["policies"]) == 2


@pytest.mark.parametrize("release", ["el-alto", "honolulu", "istanbul"])
def test_each_release_fixture_is_valid_against_the_schema(release: str) -> None:
    """Every release's PDP_UPDATE fixture is valid against schemas/v1/pdp-update.json and
    the model, so the schema describes what each PAP release sends.
    """
    message = fixture(f"{release}.pdp-update")
    assert list(schemas.validator("pdp-update").iter_errors(message)) == []
    assert PdpUpdate.model_validate(message).pdp_heartbeat_interval_ms == 120000
