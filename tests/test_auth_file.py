"""The auth file, password hashes, ``hash-password``, and ``serve``'s refusals to start."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import sys
from pathlib import Path

import pytest

from policy_pubsub import auth
from policy_pubsub.auth import (
    AuthFileError,
    ScryptHash,
    hash_password,
    load_auth_file,
    verify_password,
)
from policy_pubsub.cli.serve import refusal
from policy_pubsub.config import Settings
from tests.processes import ROOT, ServerProcess, free_port

EXAMPLE = ROOT / "examples" / "auth.toml"
RUN_TIMEOUT = 30.0
HASH = re.compile(r"^scrypt\$16384\$8\$1\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$")


def test_hash_has_the_documented_format_and_verifies() -> None:
    """A hash is scrypt$16384$8$1$salt$hash with a 16-byte salt and a 32-byte hash, verifies
    its password and no other, and two hashes of one password differ (random salts).
    """
    first, second = hash_password("s3cret"), hash_password("s3cret")
    match = HASH.match(first)
    assert match is not None, first
    assert len(base64.b64decode(match.group(1))) == 16
    assert len(base64.b64decode(match.group(2))) == 32
    assert first != second
    assert verify_password("s3cret", first) and verify_password("s3cret", second)
    assert not verify_password("s3cret ", first)
    assert not verify_password("", first)


@pytest.mark.parametrize(
    "stored",
    ["", "scrypt", "bcrypt$x", "scrypt$16384$8$1$!!$!!", "scrypt$1000$8$1$AAAAAAAAAAA=$AAAA"],
)
def test_malformed_hash_verifies_nothing(stored: str) -> None:
    """A malformed or unsafe hash never verifies, and raises nothing."""
    assert not verify_password("anything", stored)


async def test_example_file_holds_the_documented_demo_users() -> None:
    """examples/auth.toml loads, and its pap, tca and admin users log in with the demo
    passwords its comments give (NAME-demo-password), in their documented roles.
    """
    text = EXAMPLE.read_text()
    authenticator = load_auth_file(EXAMPLE)
    roles = {"pap": {"pap"}, "tca": {"component"}, "admin": {"admin"}}
    for name, expected in roles.items():
        password = f"{name}-demo-password"
        assert f"Demo password: {password}" in text, name
        user = await authenticator.basic(name, password)
        assert user is not None, name
        assert set(user.roles) == expected
        assert await authenticator.basic(name, password + "x") is None
    tca = authenticator.users["tca"]
    assert tca.may_read("policies_DCAE_tca_tca-1")
    assert not tca.may_read("policies_DCAE_TCA_tca-1")  # case-sensitive
    assert not tca.may_read("policies_DCAE_other")


def test_topic_patterns_are_case_sensitive_globs(tmp_path: Path) -> None:
    """A component's topic patterns are fnmatch globs matched case-sensitively; an admin
    reads every topic, a pap user none.
    """
    path = tmp_path / "auth.toml"
    path.write_text(
        '[users.c]\npassword = "p"\nroles = ["component"]\ntopics = ["a_*_z", "exact", "x?"]\n'
        '[users.a]\npassword = "p"\nroles = ["admin"]\n'
        '[users.p]\npassword = "p"\nroles = ["pap"]\n'
    )
    users = load_auth_file(path).users
    component, admin, pap = users["c"], users["a"], users["p"]
    assert [component.may_read(t) for t in ("a_b_z", "a__z", "A_b_z", "exact", "exactly")] == [
        True,
        True,
        False,
        True,
        False,
    ]
    assert component.may_read("x1") and not component.may_read("x12")
    assert admin.may_read("anything") and not pap.may_read("exact")


INVALID = [
    ("bad TOML", "[users.pap\npassword = 1\n", "is not valid TOML"),
    ("unknown role", '[users.tca]\npassword = "p"\nroles = ["comp"]\n', "users.tca.roles"),
    ("no credentials", '[users.tca]\nroles = ["component"]\n', "users.tca: no credentials"),
    ("unknown key", '[users.tca]\npasword = "p"\nroles = ["pap"]\n', "users.tca.pasword"),
    ("no roles", '[users.tca]\npassword = "p"\n', "users.tca.roles"),
    ("empty roles", '[users.tca]\npassword = "p"\nroles = []\n', "users.tca.roles"),
    ("unknown table", '[people.tca]\npassword = "p"\n', "people: unknown key"),
    ("no users", "", "users"),
    ("empty users", "[users]\n", "defines no users"),
    ("empty password", '[users.tca]\npassword = ""\nroles = ["pap"]\n', "users.tca.password"),
    ("bad hash", '[users.tca]\npassword_hash = "md5$x"\nroles = ["pap"]\n', "users.tca.pass"),
    (
        "hash and password",
        f'[users.tca]\npassword_hash = "{hash_password("p")}"\npassword = "p"\nroles = ["pap"]\n',
        "users.tca: give password_hash or password, not both",
    ),
    (
        "topics on pap",
        '[users.pap]\npassword = "p"\nroles = ["pap"]\ntopics = ["t*"]\n',
        "users.pap.topics",
    ),
    (
        "bad topic pattern",
        '[users.tca]\npassword = "p"\nroles = ["component"]\ntopics = ["a/b"]\n',
        "users.tca.topics[0]",
    ),
    ("short token", '[users.tca]\ntoken = "short"\nroles = ["component"]\n', "users.tca.token"),
    (
        "shared token",
        '[users.a]\ntoken = "0123456789abcdef0"\nroles = ["pap"]\n'
        '[users.b]\ntoken = "0123456789abcdef0"\nroles = ["pap"]\n',
        "users.b.token: users.a has the same one",
    ),
    ("bad user name", '[users."a:b"]\npassword = "p"\nroles = ["pap"]\n', "users.a:b"),
]


@pytest.mark.parametrize(
    ("text", "names"), [(t, n) for _, t, n in INVALID], ids=[i[0] for i in INVALID]
)
def test_invalid_auth_file_is_refused_with_a_one_line_reason(
    tmp_path: Path, text: str, names: str
) -> None:
    """An unusable auth file is an AuthFileError of one line naming the file and the user
    and field at fault.
    """
    path = tmp_path / "auth.toml"
    path.write_text(text)
    with pytest.raises(AuthFileError) as caught:
        load_auth_file(path)
    message = caught.value.message
    assert "\n" not in message, message
    assert message.startswith(f"auth file {path}: "), message
    assert names in message, message


def test_missing_auth_file_is_refused(tmp_path: Path) -> None:
    """An auth file that cannot be read is an AuthFileError saying so."""
    with pytest.raises(AuthFileError, match="cannot be read"):
        load_auth_file(tmp_path / "absent.toml")


def test_scrypt_parameters_are_bounded() -> None:
    """A hash asking for absurd scrypt memory is refused when the file is read, not run."""
    with pytest.raises(ValueError, match="MiB"):
        ScryptHash.parse("scrypt$1048576$64$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44)


def _env() -> dict[str, str]:
    """This environment without POLICY_PUBSUB_* settings, so only the flags count."""
    return {k: v for k, v in os.environ.items() if not k.startswith("POLICY_PUBSUB_")}


async def _run(
    *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run ``python -m policy_pubsub ARGS``; its exit status, stdout and stderr. Killed by
    its pid if it does not exit in time (and the test fails).
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "policy_pubsub",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**_env(), **(env or {})},
        cwd=ROOT,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin or b""), RUN_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"policy-pubsub {' '.join(args)} did not exit within {RUN_TIMEOUT} s")
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("variable", [None, ""], ids=["unset", "empty"])
async def test_serve_refuses_a_public_address_without_an_auth_file(
    tmp_path: Path, variable: str | None
) -> None:
    """serve --host 0.0.0.0 without an auth file (POLICY_PUBSUB_AUTH_FILE unset or empty)
    exits 2 at once with one line saying why.
    """
    database = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    code, out, err = await _run(
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        str(free_port()),
        "--database-url",
        database,
        env=None if variable is None else {"POLICY_PUBSUB_AUTH_FILE": variable},
    )
    assert code == 2, (out, err)
    assert err.strip().splitlines() == [
        "policy-pubsub: refusing to serve 0.0.0.0 without authentication: give --auth-file "
        "(see examples/auth.toml), or --insecure if a proxy in front authenticates"
    ]
    assert not (tmp_path / "store.db").exists()


async def test_serve_starts_on_a_public_address_with_insecure(tmp_path: Path) -> None:
    """serve --host 0.0.0.0 --insecure starts, serves, and warns that it has no
    authentication; it is stopped by its pid.
    """
    server = ServerProcess(
        tmp_path / "store.db",
        tmp_path / "server.log",
        args=["--host", "0.0.0.0", "--insecure"],
    )
    try:
        await server.start()
        assert server.running
    finally:
        await server.stop()
    assert server.returncode == 0, server.tail()
    assert "serving 0.0.0.0 without authentication (--insecure)" in server.tail()


async def test_serve_refuses_an_invalid_auth_file(tmp_path: Path) -> None:
    """serve --auth-file with an unknown role exits 2 with one line naming user and field."""
    path = tmp_path / "auth.toml"
    path.write_text('[users.tca]\npassword = "p"\nroles = ["component", "root"]\n')
    code, out, err = await _run(
        "serve",
        "--port",
        str(free_port()),
        "--database-url",
        f"sqlite+aiosqlite:///{tmp_path / 'store.db'}",
        "--auth-file",
        str(path),
    )
    assert code == 2, (out, err)
    lines = [line for line in err.splitlines() if line.startswith("policy-pubsub:")]
    assert lines == [
        f"policy-pubsub: auth file {path}: users.tca.roles[1]: unknown role 'root'; "
        "the roles are pap, component, admin"
    ], err


async def test_hash_password_prints_a_hash_that_verifies() -> None:
    """hash-password with the password piped on stdin prints one hash of it; an empty stdin
    prints nothing and exits 2.
    """
    code, out, err = await _run("hash-password", stdin=b"pap-secret\n")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 1 and HASH.match(lines[0]), out
    assert verify_password("pap-secret", lines[0])
    assert not verify_password("pap-secret\n", lines[0])
    code, out, err = await _run("hash-password", stdin=b"")
    assert (code, out) == (2, ""), err
    assert "stdin holds no password" in err


@pytest.mark.parametrize(
    ("host", "refused"),
    [
        ("127.0.0.1", False),
        ("127.0.0.2", False),
        ("::1", False),
        ("localhost", False),
        ("0.0.0.0", True),
        ("::", True),
        ("10.1.2.3", True),
        ("pp.example.org", True),
        ("", True),
    ],
)
def test_only_loopback_may_serve_without_users(host: str, refused: bool) -> None:
    """Without an auth file only a loopback host may serve, unless insecure is set."""
    assert (refusal(Settings(host=host)) is not None) == refused
    assert refusal(Settings(host=host, insecure=True)) is None
    assert refusal(Settings(host=host, auth_file=str(EXAMPLE))) is None


def test_tls_needs_both_files_and_they_must_exist(tmp_path: Path) -> None:
    """A certificate without a key (or the reverse), or a TLS file that is not there, is
    refused before the server starts.
    """
    cert = tmp_path / "cert.pem"
    cert.write_text("not checked here")
    assert "go together" in (refusal(Settings(ssl_certfile=str(cert))) or "")
    assert "go together" in (refusal(Settings(ssl_keyfile=str(cert))) or "")
    missing = refusal(Settings(ssl_certfile=str(cert), ssl_keyfile=str(tmp_path / "key.pem")))
    assert missing == f"TLS file {tmp_path / 'key.pem'} does not exist"
    assert refusal(Settings(ssl_certfile=str(cert), ssl_keyfile=str(cert))) is None


def test_a_password_with_nul_appended_does_not_match() -> None:
    """scrypt keys HMAC with the password and HMAC pads short keys with zero bytes, so
    "s3cret" and "s3cret\\0" hash alike; the check compares the exact password nonetheless.
    """
    stored = hash_password("s3cret", n=16)
    assert verify_password("s3cret", stored)
    assert not verify_password("s3cret\0", stored)
    assert not verify_password("s3cret\0\0", stored)


async def test_every_failed_login_costs_one_scrypt_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An unknown user, a token-only user, a plain-password user and a hashed-password user
    with a wrong password each cost exactly one scrypt check, so how long a refusal takes does
    not tell which users exist or how they log in.
    """
    model = auth.AuthFileModel.model_validate(
        {
            "users": {
                "hashed": {"roles": ["pap"], "password_hash": hash_password("right", n=16)},
                "plain": {"roles": ["pap"], "password": "right-plain"},
                "robot": {"roles": ["pap"], "token": "t" * 32},
            }
        }
    )
    authenticator = auth.Authenticator.from_model(model)
    checks = 0
    real = auth._scrypt

    def counting(password: bytes, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
        nonlocal checks
        checks += 1
        return real(password, salt, n, r, p, length)

    monkeypatch.setattr(auth, "_scrypt", counting)
    for name in ("nobody", "robot", "plain", "hashed"):
        checks = 0
        assert await authenticator.basic(name, "wrong") is None, name
        assert checks == 1, name
    assert await authenticator.basic("plain", "right-plain") is not None
    assert await authenticator.basic("hashed", "right") is not None
