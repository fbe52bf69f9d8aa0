"""The server as one PDP of an ONAP PAP, over the POLICY-PDP-PAP topic: registration, deploy,
undeploy, state change and heartbeats, with the PAP simulator on the server's own message
router and on a second server acting as an external DMaaP MR.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from policy_pubsub import schemas
from policy_pubsub.config import Settings
from policy_pubsub.exceptions import RouterUnavailable
from policy_pubsub.onap.channel import PapChannel, default_pdp_name
from policy_pubsub.routers import OutMessage
from tests.api.helpers import tosca
from tests.conftest import (
    LiveServer,
    make_settings,
    postgres_database,
    start_server,
    stop_server,
    wait_for,
)
from tests.onap.pap_simulator import PapSimulator, running_pap, state_change, update

NAME = "pdp-1"
GROUP = "defaultGroup"
PDP_TYPE = "policy-pubsub"
HEARTBEAT_MS = 200


def pdp_overrides(pap_topic_url: str, **overrides: Any) -> dict[str, Any]:
    """A named PDP whose own heartbeat is slow until its PAP says otherwise."""
    return {
        "pap_topic_url": pap_topic_url,
        "pdp_name": NAME,
        "pdp_group": GROUP,
        "pdp_heartbeat_ms": 60_000,
        "pap_poll_timeout_ms": 1000,
        **overrides,
    }


def pdp_settings(tmp_path: Path, pap_topic_url: str, **overrides: Any) -> Settings:
    """A PDP server on a SQLite file in ``tmp_path``."""
    return make_settings(tmp_path, **pdp_overrides(pap_topic_url, **overrides))


@asynccontextmanager
async def live(settings: Settings) -> AsyncIterator[LiveServer]:
    server, task = await start_server(settings)
    try:
        yield server
    finally:
        await stop_server(server, task)


def channel(server: LiveServer) -> PapChannel:
    pap = server.state._running().pap
    assert pap is not None
    return pap


async def deployed(server: LiveServer) -> set[str]:
    return {p.policy_id for p in await server.state.service.policies()}


async def dialogue(pap: PapSimulator, pdp: LiveServer) -> None:
    """The documented interaction, start to end, checked at each step."""
    registration = await pap.registration(group=GROUP)
    assert registration["name"] == NAME
    assert registration["pdpType"] == PDP_TYPE
    assert registration["state"] == "PASSIVE"
    assert registration["healthy"] == "HEALTHY"
    assert registration["policies"] == []
    assert "pdpSubgroup" not in registration

    restart = tosca("onap.restart.tca")
    updated, activated = await pap.assign(
        registration, heartbeat_ms=HEARTBEAT_MS, policies=[restart]
    )
    assert updated["response"]["responseStatus"] == "SUCCESS"
    assert updated["name"] == NAME
    assert updated["pdpSubgroup"] == PDP_TYPE
    assert updated["state"] == "PASSIVE"
    assert updated["policies"] == [{"name": "onap.restart.tca", "version": "1.0.0"}]
    assert await deployed(pdp) == {"onap.restart.tca"}  # committed before the answer
    assert activated["response"]["responseStatus"] == "SUCCESS"
    assert activated["state"] == "ACTIVE"

    # Heartbeats now come at the PAP's interval (the PDP's own is a minute).
    seen = len(pap.statuses)
    beats = []
    for _ in range(3):
        beat = await pap.wait_status(
            lambda s: s["name"] == NAME and "response" not in s, after=seen, timeout=5
        )
        seen = pap.statuses.index(beat) + 1
        beats.append(beat)
    assert all(b["state"] == "ACTIVE" and b["pdpSubgroup"] == PDP_TYPE for b in beats)
    gaps = [b["timestampMs"] - a["timestampMs"] for a, b in itertools.pairwise(beats)]
    assert all(gap >= HEARTBEAT_MS * 0.7 for gap in gaps), gaps

    undeployed = await pap.request(
        update(NAME, GROUP, PDP_TYPE, undeploy=[{"name": "onap.restart.tca", "version": "1.0.0"}])
    )
    assert undeployed["response"]["responseStatus"] == "SUCCESS"
    assert undeployed["policies"] == []
    assert await deployed(pdp) == set()

    # El Alto's PAP sends the complete set in `policies`: what is not listed goes.
    for wanted in (["onap.scaleout.tca", "onap.vfirewall.tca"], ["onap.vfirewall.tca"]):
        el_alto = update(NAME, GROUP, PDP_TYPE, heartbeat_ms=HEARTBEAT_MS)
        del el_alto["policiesToBeDeployed"], el_alto["policiesToBeUndeployed"]
        answer = await pap.request({**el_alto, "policies": [tosca(p) for p in wanted]})
        assert answer["response"]["responseStatus"] == "SUCCESS"
        assert [p["name"] for p in answer["policies"]] == wanted
        assert await deployed(pdp) == set(wanted)

    passive = await pap.request(state_change(NAME, "PASSIVE"))
    assert passive["response"]["responseStatus"] == "SUCCESS"
    assert passive["state"] == "PASSIVE"

    for status in pap.statuses:  # registration, heartbeats and answers, as schemas/v1 says
        schemas.validator("pdp-status").validate(status)

    async with httpx.AsyncClient(base_url=pdp.url) as http:
        health = (await http.get("/healthcheck")).json()
    schemas.validator("healthcheck").validate(health)
    assert health["details"]["pdp"] == {
        "name": NAME,
        "group": GROUP,
        "subgroup": PDP_TYPE,
        "state": "PASSIVE",
        "topic": "POLICY-PDP-PAP",
        "leader": True,
        "error": None,
    }


async def test_dialogue_over_the_embedded_router(settings: Settings) -> None:
    """A PAP whose DMaaP topic is this server's own /events registers, deploys, undeploys,
    activates and hears the heartbeats of the server's PDP (on each store).
    """
    ours = settings.model_copy(update=pdp_overrides("embedded"))
    async with live(ours) as pdp, running_pap(pdp.url) as pap:
        await dialogue(pap, pdp)


async def test_dialogue_over_an_external_message_router(tmp_path: Path) -> None:
    """The same dialogue with the topic on a second server acting as the DMaaP MR."""
    (tmp_path / "mr").mkdir()
    async with live(make_settings(tmp_path / "mr")) as mr:
        url = f"dmaap+{mr.url}/POLICY-PDP-PAP"
        async with live(pdp_settings(tmp_path, url)) as pdp, running_pap(mr.url) as pap:
            await dialogue(pap, pdp)
            assert "POLICY-PDP-PAP" not in await pdp.state.router.topics()


async def test_messages_for_others_are_ignored(tmp_path: Path) -> None:
    """Updates for another PDP name, broadcasts to another group or subgroup, other PDPs'
    statuses, a message that is no PDP message and one that is not JSON change nothing, get no
    answer and hold nothing up; a broadcast to the PDP's own group is handled, and a malformed
    update for it gets FAIL.
    """
    async with live(pdp_settings(tmp_path, "embedded")) as pdp, running_pap(pdp.url) as pap:
        registration = await pap.registration(group=GROUP)
        await pap.assign(registration, heartbeat_ms=60_000, policies=[])
        ignored = [
            update("pdp-2", GROUP, PDP_TYPE, deploy=[tosca("for.pdp2")]),
            update(None, "otherGroup", None, deploy=[tosca("for.other.group")]),
            update(None, GROUP, "xacml", deploy=[tosca("for.other.subgroup")]),
            {**registration, "name": "pdp-2", "requestId": "someone-else"},
            {"hello": "world"},
        ]
        # Not JSON at all: only another writer than a DMaaP client could put it there.
        await pdp.state.router.publish([OutMessage(pap.topic, "{not json")])
        for message in ignored:
            await pap.send(message)
        broadcast = await pap.request(update(None, GROUP, None, deploy=[tosca("for.group")]))
        assert broadcast["response"]["responseStatus"] == "SUCCESS"
        bad = update(NAME, GROUP, PDP_TYPE)
        bad["policiesToBeDeployed"] = [{"name": "no.type"}]
        refused = await pap.request(bad)
        assert refused["response"]["responseStatus"] == "FAIL"
        assert "type" in refused["response"]["responseMessage"]

        # Messages are handled in order: the ignored ones were read before the broadcast.
        assert await deployed(pdp) == {"for.group"}
        answered = {s["response"]["responseTo"] for s in pap.statuses if "response" in s}
        assert not answered & {m["requestId"] for m in ignored if "requestId" in m}


async def test_an_update_is_read_again_until_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the answer to a committed PDP_UPDATE cannot be sent, the update stays on the topic
    for the PDP's next read: it is applied (no change the second time) and answered SUCCESS.
    """
    async with live(pdp_settings(tmp_path, "embedded")) as pdp, running_pap(pdp.url) as pap:
        registration = await pap.registration(group=GROUP)
        await pap.assign(registration, heartbeat_ms=60_000, policies=[])
        pap_channel = channel(pdp)
        send = pap_channel._send
        failures = []

        async def failing_once(message: dict[str, Any]) -> None:
            if "response" in message and not failures:
                failures.append(message)
                raise RouterUnavailable("the router went away")
            await send(message)

        monkeypatch.setattr(pap_channel, "_send", failing_once)
        answer = await pap.request(update(NAME, GROUP, PDP_TYPE, deploy=[tosca("a.policy")]))
        assert failures, "the first answer was not attempted"
        assert failures[0]["response"]["responseTo"] == answer["response"]["responseTo"]
        assert answer["response"]["responseStatus"] == "SUCCESS"
        assert answer["policies"] == [{"name": "a.policy", "version": "1.0.0"}]


async def test_webhook_takes_a_state_change(tmp_path: Path) -> None:
    """POST /pap/v1/pdp-update takes a PDP_STATE_CHANGE (PASSIVE or ACTIVE) and answers with
    the PDP_STATUS; an unsupported state is a 400 that changes nothing.
    """
    async with (
        live(make_settings(tmp_path)) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        r = await http.post("/pap/v1/pdp-update", json=state_change(None, "PASSIVE"))
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "PASSIVE"
        assert r.json()["response"]["responseStatus"] == "SUCCESS"
        schemas.validator("pdp-status").validate(r.json())
        r = await http.post("/pap/v1/pdp-update", json=state_change(None, "SAFE"))
        assert r.status_code == 400
        assert "SAFE" in r.json()["error"]
        assert server.state.pdp.state == "PASSIVE"


async def test_one_replica_talks_to_the_pap(tmp_path: Path) -> None:
    """Two replicas of one PostgreSQL store are one PDP, of one default name derived from the
    store: only the lock holder registers and beats, the other stays silent; when the leader
    stops it says TERMINATED, and the other replica takes over and registers under that name.
    """
    async with postgres_database() as url:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        common = {"database_url": url, "pdp_name": None, "pdp_heartbeat_ms": 100}
        a, a_task = await start_server(pdp_settings(tmp_path / "a", "embedded", **common))
        try:
            async with (
                live(pdp_settings(tmp_path / "b", "embedded", **common)) as b,
                running_pap(b.url) as pap,
            ):
                first = await pap.registration(group=GROUP)
                await wait_for(lambda: len(pap.statuses) >= 5, timeout=5)
                assert {s["name"] for s in pap.statuses} == {first["name"]}
                leader, other = (a, b) if channel(a).leading else (b, a)
                assert not channel(other).leading
                assert first["name"] == channel(leader).pdp.identity.name

                if leader is a:
                    await stop_server(a, a_task)
                else:
                    await channel(b).close()  # b serves the PAP's topic: stop only its PDP
                goodbye = await pap.wait_status(
                    lambda s: s["name"] == first["name"] and s["state"] == "TERMINATED"
                )
                taken = await pap.wait_status(
                    lambda s: s["state"] == "PASSIVE" and "response" not in s,
                    after=pap.statuses.index(goodbye),
                )
                assert channel(other).leading
                assert taken["name"] == first["name"] == default_pdp_name(url)
                assert channel(other).pdp.identity.name == first["name"]
        finally:
            if not a_task.done():
                await stop_server(a, a_task)


def test_the_default_pdp_name_is_the_stores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default PDP name is the same for every start and replica of one store, differs
    between stores, and never carries the database password.
    """
    pg = "postgresql+asyncpg://pubsub:s3cret@db.example:5432/policies"
    assert default_pdp_name(pg) == default_pdp_name(pg.replace("s3cret", "rotated"))
    assert default_pdp_name(pg) != default_pdp_name(pg.replace("/policies", "/other"))
    assert "s3cret" not in default_pdp_name(pg)
    assert re.fullmatch(r"policy-pubsub-[0-9a-f-]{36}", default_pdp_name(pg))
    monkeypatch.chdir(tmp_path)
    relative = "sqlite+aiosqlite:///pubsub.db"
    absolute = f"sqlite+aiosqlite:///{tmp_path / 'pubsub.db'}"
    assert default_pdp_name(relative) == default_pdp_name(absolute)
    assert default_pdp_name(absolute) != default_pdp_name(absolute.replace("pubsub.db", "b.db"))
