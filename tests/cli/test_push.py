"""``policy-pubsub push``: files, directories, service templates, PDP_UPDATE messages, batches."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli.conftest import TCA_TYPE, Cli, policy
from tests.conftest import POLICIES, LiveServer, load_policy

SCRIPT = Path(sys.executable).with_name("policy-pubsub")
TOPIC = "policies_DCAE_tca_tca-1"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "onap"


async def deployed(client: httpx.AsyncClient) -> dict[str, str]:
    """What the server has deployed: policy-id -> version."""
    answer = await client.get("/pap/v1/policies")
    assert answer.status_code == 200, answer.text
    return {p["policy-id"]: p["policy-version"] for p in answer.json()["policies"]}


async def subscribe_all(client: httpx.AsyncClient) -> int:
    """A subscriber to every tca policy; the revision of its subscription."""
    answer = await client.post(
        "/decision/v1/subscription/tca-1",
        json={"subscriber_topic": TOPIC, "policy-filters": [{"policy-type": TCA_TYPE}]},
    )
    assert answer.status_code == 201, answer.text
    revision: int = answer.json()["revision"]
    return revision


def write(path: Path, content: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    else:
        path.write_text(json.dumps(content))
    return path


async def test_files_go_in_one_request_and_the_output_says_what_happened(
    cli: Cli, client: httpx.AsyncClient
) -> None:
    """Two policy files are deployed by one request (one revision) and the output names them,
    the revision and the subscribers notified.
    """
    before = await subscribe_all(client)
    result = await cli(
        "push", f"{POLICIES}/onap.restart.tca.json", f"{POLICIES}/onap.scaleout.tca.json"
    )
    assert result.code == 0, result.explain()
    assert await deployed(client) == {"onap.restart.tca": "1.0.0", "onap.scaleout.tca": "1.0.0"}
    assert result.out.splitlines() == [
        "deployed onap.restart.tca 1.0.0",
        "deployed onap.scaleout.tca 1.0.0",
        f"revision {before + 1}; 1 subscriber notified",
    ]
    assert result.err == ""


async def test_json_prints_the_servers_answer(cli: Cli, client: httpx.AsyncClient) -> None:
    """With --json the output is the server's deploy answer, one JSON document per request."""
    await subscribe_all(client)
    result = await cli("push", f"{POLICIES}/onap.restart.tca.json", "--json")
    assert result.code == 0, result.explain()
    [answer] = result.json_lines()
    assert answer["deployed"] == [{"policy-id": "onap.restart.tca", "policy-version": "1.0.0"}]
    assert (answer["undeployed"], answer["notified"]) == ([], 1)


async def test_directory_is_read_recursively_in_sorted_order(
    cli: Cli, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """A directory contributes its *.json, *.yaml and *.yml files at any depth, in sorted path
    order, and nothing else (other suffixes and hidden files are not read).
    """
    write(tmp_path / "b.json", policy("p.b"))
    write(tmp_path / "a.yaml", json.dumps(policy("p.a")))  # JSON is YAML too
    write(tmp_path / "sub" / "c.yml", [policy("p.c")])
    write(tmp_path / "notes.txt", "not a policy")
    write(tmp_path / "sub" / ".draft.json", "{not even JSON")
    result = await cli("push", str(tmp_path), "--batch-size", "1")
    assert result.code == 0, result.explain()
    assert result.out.splitlines()[:3] == [
        "deployed p.a 1.0.0",
        "deployed p.b 1.0.0",
        "deployed p.c 1.0.0",
    ]
    assert await deployed(client) == {"p.a": "1.0.0", "p.b": "1.0.0", "p.c": "1.0.0"}


async def test_yaml_service_template_sample_deploys_the_same_policy_as_the_json(
    cli: Cli, client: httpx.AsyncClient
) -> None:
    """examples/policies/onap.scaleout.tca.yaml, an ONAP service template, deploys exactly the
    policy of onap.scaleout.tca.json.
    """
    result = await cli("push", f"{POLICIES}/onap.scaleout.tca.yaml")
    assert result.code == 0, result.explain()
    assert result.out.startswith("deployed onap.scaleout.tca 1.0.0\n")
    stored = (await client.get("/pap/v1/policies/onap.scaleout.tca")).json()
    assert stored == load_policy("onap.scaleout.tca")


async def test_service_template_policy_takes_its_name_from_its_key(
    cli: Cli, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """In a service template (here in JSON) a policy without name or policy-id is named by its
    key in topology_template.policies, and its metadata is filled in as policy-api fills it.
    """
    body = {"type": TCA_TYPE, "type_version": "1.0.0", "version": "2.0.0", "properties": {}}
    template = {
        "tosca_definitions_version": "tosca_simple_yaml_1_1_0",
        "topology_template": {"policies": [{"p.one": body}, {"p.two": body}]},
    }
    result = await cli("push", str(write(tmp_path / "template.json", template)))
    assert result.code == 0, result.explain()
    assert await deployed(client) == {"p.one": "2.0.0", "p.two": "2.0.0"}
    stored = (await client.get("/pap/v1/policies/p.one")).json()
    metadata = {"policy-id": "p.one", "policy-version": "2.0.0"}
    assert stored == {"name": "p.one", **body, "metadata": metadata}


async def test_onap_service_templates_are_sent_as_policy_api_stores_them(
    cli: Cli, client: httpx.AsyncClient
) -> None:
    """ONAP's YAML goes through as policy-api takes it: ``operator: [=]`` is the string "=";
    two policies that share a metadata.policy-id are two policies, named by their keys; a
    policy listed twice is deployed as listed last; metadata.policy-id / policy-version are
    set from the name and version, so El Alto's ``policy-version: 1`` becomes "1.0.0".
    """
    result = await cli(
        "push",
        str(FIXTURES / "optimization.service-template.yaml"),
        str(FIXTURES / "el-alto.service-template.yaml"),
    )
    assert result.code == 0, result.explain()
    assert await deployed(client) == {
        "OPT.hpa_policy_vG": "1.0.0",
        "OPT.Affinity_vG_Gold": "1.0.0",
        "OPT.Affinity_vG_Platinum": "1.0.0",
        "OPT.queryPolicy_vG": "1.0.0",
        "onap.restart.tca": "1.0.0",
    }
    answer = await client.post(
        "/decision/v1",
        json={"resource": {"policy-id": ["OPT.*", "onap.restart.tca"]}},
        params={"abbrev": "true"},
    )
    for name, found in answer.json()["policies"].items():
        assert found["metadata"] == {"policy-id": name, "policy-version": "1.0.0"}, name
    hpa = (await client.get("/pap/v1/policies/OPT.hpa_policy_vG")).json()
    features = hpa["properties"]["flavorFeatures"][0]["flavorProperties"]
    assert [a["operator"] for f in features for a in f["hpa-feature-attributes"]] == [
        [">="],
        ["<="],
        ["="],
    ]
    query = (await client.get("/pap/v1/policies/OPT.queryPolicy_vG")).json()
    assert query["properties"]["queryProperties"][0]["value"] == "x"


async def test_a_template_policy_named_other_than_its_key_is_exit_2(
    cli: Cli, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """A service template policy whose ``name`` is not its key is refused before anything is
    sent, as policy-api refuses it.
    """
    body = {"type": TCA_TYPE, "version": "1.0.0", "name": "other"}
    template = {"tosca_definitions_version": "x", "topology_template": {"policies": [{"p": body}]}}
    path = write(tmp_path / "template.json", template)
    result = await cli("push", str(path))
    assert result.code == 2
    assert result.err == (
        f"policy-pubsub: {path}: policy 'p' of the service template has the name 'other': "
        "its name must be its key (ONAP's policy-api refuses it too)\n"
    )
    assert await deployed(client) == {}


async def test_pdp_update_file_is_sent_as_it_is(cli: Cli, client: httpx.AsyncClient) -> None:
    """A PDP_UPDATE file goes to /pap/v1/pdp-update unchanged: its delta is applied and the
    PDP_STATUS answers its requestId.
    """
    update_file = POLICIES / "pdp-update.delta.json"
    await client.post("/pap/v1/policies", json={"policies": [load_policy("onap.vfirewall.tca")]})
    result = await cli("push", str(update_file))
    assert result.code == 0, result.explain()
    assert result.out.startswith(
        f"{update_file}: PDP_UPDATE SUCCESS: deployed 1 policy and undeployed 1 policy"
    )
    assert await deployed(client) == {"onap.restart.tca": "1.0.1"}

    again = await cli("push", str(update_file), "--json")
    assert again.code == 0, again.explain()
    [status] = again.json_lines()
    assert status["messageName"] == "PDP_STATUS"
    assert status["response"]["responseTo"] == json.loads(update_file.read_text())["requestId"]


async def test_sample_directory_deploys_policies_then_applies_the_pdp_update(
    cli: Cli, client: httpx.AsyncClient
) -> None:
    """`push examples/policies` deploys the plain policies first (the JSON and YAML forms of
    onap.scaleout.tca once), then applies pdp-update.delta.json on top of them.
    """
    result = await cli("push", str(POLICIES))
    assert result.code == 0, result.explain()
    assert await deployed(client) == {
        "guard.minmax.vdns": "1.0.0",
        "onap.restart.tca": "1.0.1",
        "onap.scaleout.tca": "1.0.0",
    }
    assert result.out.count("deployed onap.scaleout.tca") == 1


async def test_identical_push_reports_unchanged_policies(
    cli: Cli, client: httpx.AsyncClient
) -> None:
    """Pushing what is already deployed changes nothing, notifies nobody, and says so."""
    await subscribe_all(client)
    first = await cli("push", f"{POLICIES}/onap.restart.tca.json", "--json")
    revision = first.json_lines()[0]["revision"]
    result = await cli("push", f"{POLICIES}/onap.restart.tca.json")
    assert result.code == 0, result.explain()
    assert result.out.splitlines() == [
        "unchanged onap.restart.tca 1.0.0 (already deployed)",
        f"revision {revision}; 0 subscribers notified",
    ]


async def test_batch_size_splits_the_policies_into_requests(
    cli: Cli, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """--batch-size 2 sends five policies in three requests, each its own revision."""
    before = await subscribe_all(client)
    write(tmp_path / "all.json", {"policies": [policy(f"p.{n}") for n in range(5)]})
    result = await cli("push", str(tmp_path / "all.json"), "--batch-size", "2", "--json")
    assert result.code == 0, result.explain()
    answers = result.json_lines()
    assert [len(a["deployed"]) for a in answers] == [2, 2, 1]
    assert [a["revision"] for a in answers] == [before + 1, before + 2, before + 3]
    assert len(await deployed(client)) == 5


async def test_failed_batch_says_what_was_deployed_before_it(
    cli: Cli, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """When batch 2 is refused, batch 1 stays deployed, its policies are printed, and the error
    names the file of the bad policy and the batch.
    """
    write(tmp_path / "a.json", [policy("p.a"), policy("p.b")])
    bad = write(tmp_path / "b.json", {"name": "p.c", "version": "1.0.0"})  # no type
    result = await cli("push", str(tmp_path), "--batch-size", "2")
    assert result.code == 1
    assert result.out.splitlines()[:2] == ["deployed p.a 1.0.0", "deployed p.b 1.0.0"]
    assert result.err.startswith("policy-pubsub: 400: policies[0].type")
    assert f"(that policy is from {bad})" in result.err
    assert result.err.rstrip("\n").endswith("batch 2 of 2 failed, batch 1 was deployed")
    assert result.err.count("\n") == 1
    assert await deployed(client) == {"p.a": "1.0.0", "p.b": "1.0.0"}


async def test_server_refusal_deploys_nothing_and_names_the_file(
    cli: Cli, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """One bad policy among several refuses the whole (single) request: exit 1, nothing
    deployed, and the error names the file it came from.
    """
    write(tmp_path / "a.json", policy("p.a"))
    bad = write(tmp_path / "b.json", policy("bad id!"))
    result = await cli("push", str(tmp_path))
    assert result.code == 1
    assert result.err.startswith("policy-pubsub: 400: policies[1].")
    assert f"(that policy is from {bad})" in result.err
    assert await deployed(client) == {}


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("broken.json", '{"type": ', "not valid JSON: Expecting value"),
        ("nan.json", '{"type": NaN}', "not valid JSON: NaN is not a JSON number"),
        ("broken.yaml", "a: [1, 2\n", "not valid YAML: "),
        ("latin1.json", b'{"name": "caf\xe9"}', "not UTF-8 text"),
        ("binary.yaml", "data: !!binary aGVsbG8=\n", "holds a value JSON cannot carry"),
        ("empty.yml", "", "the file holds nothing"),
        ("number.json", "42", "expected a ToscaPolicy object"),
        ("status.json", {"messageName": "PDP_STATUS"}, "a 'PDP_STATUS' message cannot be pushed"),
        ("template.yaml", "tosca_definitions_version: x\n", "has no topology_template.policies"),
        ("list.json", [policy("p.x"), "p.y"], "(policy 2): not a ToscaPolicy object"),
        ("missing.json", None, "no such file or directory"),
    ],
)
async def test_unusable_file_is_exit_2_and_nothing_is_sent(
    cli: Cli, client: httpx.AsyncClient, tmp_path: Path, name: str, content: Any, reason: str
) -> None:
    """A file that cannot be read or used exits 2 with one line naming it and the problem,
    and not even the good files given before it are deployed.
    """
    good = write(tmp_path / "good.json", policy("p.good"))
    path = tmp_path / name
    if content is not None:
        write(path, content)
    result = await cli("push", str(good), str(path))
    assert result.code == 2
    assert result.err.startswith(f"policy-pubsub: {path}")
    assert reason in result.err
    assert result.err.count("\n") == 1
    assert result.out == ""
    assert await deployed(client) == {}


async def test_a_policy_id_given_twice_differently_is_exit_2(
    cli: Cli, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Two different policies with one policy-id are refused before sending, naming both files."""
    first = write(tmp_path / "a.json", policy("p.a", "1.0.0"))
    second = write(tmp_path / "b.json", policy("p.a", "2.0.0"))
    result = await cli("push", str(tmp_path))
    assert result.code == 2
    assert result.err == (
        f"policy-pubsub: policy-id 'p.a' is given twice and differs: in {first} and in {second}\n"
    )
    assert await deployed(client) == {}


async def test_empty_directory_is_exit_2(cli: Cli, tmp_path: Path) -> None:
    """A directory without policy files is bad input, exit 2."""
    result = await cli("push", str(tmp_path))
    assert result.code == 2
    assert "holds no .json, .yaml or .yml file" in result.err


async def test_no_progress_line_when_stderr_is_not_a_terminal(cli: Cli, tmp_path: Path) -> None:
    """Many files, but stderr is not a terminal: it stays empty."""
    for n in range(12):
        write(tmp_path / f"p{n:02}.json", policy(f"p.{n}"))
    result = await cli("push", str(tmp_path))
    assert result.code == 0, result.explain()
    assert result.err == ""


async def test_progress_line_on_a_terminal(
    server: LiveServer, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """With stderr on a terminal and many files, push rewrites one progress line there with
    carriage returns and wipes it at the end; stdout keeps only the report.
    """
    for n in range(12):
        write(tmp_path / f"p{n:02}.json", policy(f"p.{n}"))
    terminal, tty = pty.openpty()
    try:
        process = await asyncio.create_subprocess_exec(
            str(SCRIPT),
            "push",
            str(tmp_path),
            "--url",
            server.url,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=tty,
        )
        os.close(tty)
        try:
            out, _ = await asyncio.wait_for(process.communicate(), 30)
        finally:
            if process.returncode is None:
                os.kill(process.pid, signal.SIGKILL)
                await process.wait()
        shown = _read_all(terminal)
    finally:
        os.close(terminal)
    assert process.returncode == 0, shown
    assert "\rreading 12/12 " in shown
    assert "\rpushing batch 1/1 (12/12 policies)" in shown
    assert shown.endswith("\r")  # the line was wiped
    assert shown.rstrip("\r ").count("\n") == 0
    assert b"\r" not in out and out.decode().count("deployed p.") == 12
    assert len(await deployed(client)) == 12


def _read_all(terminal: int) -> str:
    """Everything written to the pty (its writer has exited, so reads end with EIO)."""
    chunks = []
    while True:
        try:
            chunk = os.read(terminal, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()
