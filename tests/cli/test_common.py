"""What every command shares: help with an example, --url and its variable, exit codes, errors."""

from __future__ import annotations

import argparse

import httpx
import pytest

from policy_pubsub.cli.common import DEFAULT_URL, URL_ENV, UsageError, server_url
from tests.cli.conftest import Cli, run_main
from tests.conftest import LiveServer, load_policy

EXAMPLES = {
    "push": "policy-pubsub push examples/policies",
    "delete": "policy-pubsub delete onap.restart.tca",
    "policies": "policy-pubsub policies",
    "decide": "policy-pubsub decide --filter",
    "subscribe": "policy-pubsub subscribe tca-1 --topic",
    "unsubscribe": "policy-pubsub unsubscribe tca-1",
    "subscribers": "policy-pubsub subscribers",
    "tail": "policy-pubsub tail policies_DCAE_tca_tca-1",
}

# Each command with the arguments that make it talk to the server.
CALLS = {
    "push": ["push", "examples/policies/onap.restart.tca.json"],
    "delete": ["delete", "onap.restart.tca"],
    "policies": ["policies"],
    "policies-one": ["policies", "onap.restart.tca"],
    "decide": ["decide", "--filter", '{"policy-id": "onap.restart.tca"}'],
    "subscribe": ["subscribe", "tca-1", "--topic", "t", "--filter", '{"policy-id": "a"}'],
    "unsubscribe": ["unsubscribe", "tca-1"],
    "subscribers": ["subscribers"],
    "tail": ["tail", "policies_DCAE_tca_tca-1"],
}


@pytest.mark.parametrize("command", sorted(EXAMPLES))
def test_help_shows_an_example_and_the_exit_codes(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`COMMAND --help` exits 0 and shows a real example line, the common options and the
    exit statuses.
    """
    assert run_main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert EXAMPLES[command] in text
    assert "--url" in text and "--json" in text and "--timeout" in text
    assert "exit status: 0 done; 1 the server refused" in text
    assert URL_ENV in text


@pytest.mark.parametrize("call", sorted(CALLS))
def test_unreachable_server_is_exit_1_with_one_line(
    call: str, unreachable_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Against a port where nothing listens, every command exits 1 with one line that names
    the URL.
    """
    code = run_main([*CALLS[call], "--url", unreachable_url])
    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert err.startswith(f"policy-pubsub: cannot reach {unreachable_url}: ")
    assert err.count("\n") == 1


async def test_url_comes_from_the_environment(
    server: LiveServer,
    client: httpx.AsyncClient,
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without --url, POLICY_PUBSUB_URL names the server."""
    await client.post("/pap/v1/policies", json={"policies": [load_policy("onap.restart.tca")]})
    monkeypatch.setenv(URL_ENV, server.url)
    result = await cli("policies", url=None)
    assert result.code == 0, result.explain()
    assert "onap.restart.tca" in result.out


async def test_url_flag_wins_over_the_environment(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, unreachable_url: str
) -> None:
    """--url is used even when POLICY_PUBSUB_URL names another server."""
    monkeypatch.setenv(URL_ENV, unreachable_url)
    result = await cli("policies")
    assert result.code == 0, result.explain()


def test_default_url_is_the_onap_pdp_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """With neither --url nor POLICY_PUBSUB_URL, the server is http://127.0.0.1:6969."""
    monkeypatch.delenv(URL_ENV, raising=False)
    assert server_url(argparse.Namespace(url=None)) == DEFAULT_URL == "http://127.0.0.1:6969"


def test_url_without_scheme_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A --url that is not http(s) exits 2 with the reason, before any request."""
    assert run_main(["policies", "--url", "localhost:6969"]) == 2
    assert capsys.readouterr().err == (
        "policy-pubsub: --url: 'localhost:6969' is not an http:// or https:// URL\n"
    )
    with pytest.raises(UsageError):
        server_url(argparse.Namespace(url="ftp://x"))


async def test_server_400_is_exit_1_with_the_servers_reason(cli: Cli) -> None:
    """A request the server refuses exits 1 with the status and the server's own sentence."""
    result = await cli("decide", "--filter", '{"policy-name": "x"}')
    assert result.code == 1
    assert result.out == ""
    assert result.err == "policy-pubsub: 400: policy-filters[0].policy-name: unknown field\n"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{policy-id: a}", "is not valid JSON: Expecting property name"),
        ('["a"]', "must be a JSON object"),
    ],
)
async def test_bad_filter_is_exit_2_and_sends_nothing(
    cli: Cli, client: httpx.AsyncClient, text: str, reason: str
) -> None:
    """A --filter that is not a JSON object exits 2 with the reason, and nothing reaches the
    server.
    """
    result = await cli("subscribe", "tca-1", "--topic", "t", "--filter", text)
    assert result.code == 2
    assert result.err.startswith(f"policy-pubsub: --filter {text!r} {reason}")
    assert result.err.count("\n") == 1
    listing = (await client.get("/decision/v1/subscription")).json()
    assert listing == {"subscriptions": []}


def test_missing_argument_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A required option left out is a usage error, exit 2."""
    assert run_main(["subscribe", "tca-1", "--filter", '{"policy-id": "a"}']) == 2
    assert "--topic" in capsys.readouterr().err


def test_timeout_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    """--timeout 0 is refused as bad usage (exit 2)."""
    assert run_main(["policies", "--timeout", "0"]) == 2
    assert "--timeout" in capsys.readouterr().err
