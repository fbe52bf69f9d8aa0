"""The commands log in and sign PAP requests when the server asks for it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from policy_pubsub import webhook_signature
from policy_pubsub.cli.common import PASSWORD_ENV, SECRET_ENV, TOKEN_ENV, USER_ENV
from policy_pubsub.config import Settings
from tests.cli.conftest import Cli
from tests.conftest import LiveServer, make_settings, wait_for

AUTH = """
[users.pap]
password = "pap-pw"
roles = ["pap"]

[users.admin]
password = "admin-pw"
roles = ["admin"]

[users.bot]
token = "bot-token-0123456789abcdef"
roles = ["admin"]
"""
SECRET = "shared-webhook-secret"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    auth = tmp_path / "auth.toml"
    auth.write_text(AUTH)
    return make_settings(tmp_path, auth_file=str(auth), pap_webhook_secret=SECRET)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (USER_ENV, PASSWORD_ENV, TOKEN_ENV, SECRET_ENV):
        monkeypatch.delenv(name, raising=False)


async def test_without_credentials_the_server_refuses(cli: Cli) -> None:
    """A command without credentials exits 1 with the server's 401 reason."""
    result = await cli("subscribers")
    assert result.code == 1
    assert result.err.startswith("policy-pubsub: 401:")


async def test_user_and_password_from_the_environment(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--user with the password in POLICY_PUBSUB_PASSWORD logs in with HTTP Basic."""
    monkeypatch.setenv(PASSWORD_ENV, "admin-pw")
    result = await cli("subscribers", "--user", "admin")
    assert result.code == 0, result.explain()
    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    assert (await cli("subscribers", "--user", "admin")).code == 1


async def test_token_from_the_environment(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """A token in POLICY_PUBSUB_TOKEN is sent as a bearer token."""
    monkeypatch.setenv(TOKEN_ENV, "bot-token-0123456789abcdef")
    result = await cli("subscribers")
    assert result.code == 0, result.explain()


async def test_missing_password_without_a_terminal_is_a_usage_error(cli: Cli) -> None:
    """--user with no password in the environment and no terminal to ask on exits 2."""
    result = await cli("subscribers", "--user", "admin")
    assert result.code == 2
    assert PASSWORD_ENV in result.err


async def test_pap_requests_are_signed_with_the_shared_secret(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """push and delete carry the webhook signature when the secret is set, and are refused
    (401) without it.
    """
    policy = tmp_path / "p.json"
    policy.write_text(
        '{"type": "t", "name": "p1", "version": "1.0.0",'
        ' "metadata": {"policy-id": "p1", "policy-version": "1.0.0"}}'
    )
    monkeypatch.setenv(USER_ENV, "pap")
    monkeypatch.setenv(PASSWORD_ENV, "pap-pw")
    unsigned = await cli("push", str(policy))
    assert unsigned.code == 1
    assert "401" in unsigned.err
    monkeypatch.setenv(SECRET_ENV, SECRET)
    signed = await cli("push", str(policy))
    assert signed.code == 0, signed.explain()
    assert (await cli("delete", "p1")).code == 0


async def test_watch_logs_in_too(
    server: LiveServer, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """watch subscribes and long-polls with the credentials it is given, and prints the
    change a push makes.
    """
    monkeypatch.setenv(USER_ENV, "admin")
    monkeypatch.setenv(PASSWORD_ENV, "admin-pw")
    watching = asyncio.create_task(
        cli(
            "watch",
            "w1",
            "--topic",
            "t-w1",
            "--filter",
            '{"policy-id": "p*"}',
            "--max-changes",
            "1",
        )
    )
    admin = httpx.BasicAuth("admin", "admin-pw")
    async with httpx.AsyncClient(base_url=server.url, auth=admin, timeout=10) as http:
        await wait_for(lambda: _subscribed(http), timeout=20)
        body = b'{"policies": [{"type": "t", "name": "p1", "version": "1"}]}'
        signature = webhook_signature.sign(SECRET, "POST", b"/pap/v1/policies", body)
        r = await http.post(
            "/pap/v1/policies",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-Policy-Pubsub-Signature": signature,
            },
        )
        assert r.status_code == 200, r.text
    result = await asyncio.wait_for(watching, timeout=30)
    assert result.code == 0, result.explain()
    assert "p1" in result.out


async def _subscribed(http: httpx.AsyncClient) -> bool:
    return (await http.get("/decision/v1/subscription/w1")).status_code == 200
