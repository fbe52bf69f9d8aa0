"""Authentication and authorisation over HTTP: every role against every route family, the
error shapes of 401 and 403, credentials good and bad, the PAP webhook signature, and TLS.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import shutil
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from policy_pubsub import auth, webhook_signature
from policy_pubsub.api.access import SIGNATURE_HEADER
from policy_pubsub.testing import LiveServer, start_server, stop_server
from tests.api.helpers import POLICIES, tosca
from tests.api.users import (
    ADMIN,
    CHALLENGE,
    COMPONENT,
    DECISION,
    IDENTITIES,
    OTHER_TOPIC,
    PAP,
    ROLE,
    SECRET,
    SUBSCRIPTIONS,
    TCA_TOKEN,
    TCA_TOPIC,
    auth_file,
    basic,
    setup_state,
    snapshot,
    sub,
)
from tests.conftest import load_policy, make_settings


@dataclass(frozen=True)
class Case:
    """One request, the status it answers when allowed, and who is allowed (admin always).
    ``foreign`` is what a component gets for another's subscription: 404 as for a missing
    one on reads and deletes (its topic is not given away), 409 on a subscribe.
    """

    method: str
    path: str
    ok: int
    allowed: frozenset[str] = frozenset()
    body: Any = None
    public: bool = False
    foreign: int | None = None

    def expected(self, identity: str) -> int:
        role = ROLE[identity]
        if self.public or role == "admin" or role in self.allowed:
            return self.ok
        if role == COMPONENT and self.foreign is not None:
            return self.foreign
        return 401 if role is None else 403


P, C, PC = frozenset({PAP}), frozenset({COMPONENT}), frozenset({PAP, COMPONENT})
CASES: tuple[Case, ...] = (
    Case("GET", "/healthcheck", 200, public=True),
    Case("GET", "/openapi.json", 200, public=True),
    Case("GET", "/pap/v1/policies", 200, P),
    Case("GET", "/pap/v1/policies/p0", 200, P),
    Case("POST", "/pap/v1/policies", 200, P, {"policies": [tosca("p1")]}),
    Case("POST", "/pap/v1/pdp-update", 200, P, load_policy("pdp-update.delta")),
    Case("DELETE", "/pap/v1/policies/pdel", 200, P),
    Case("POST", "/decision/v1", 200, C, DECISION),
    Case("POST", "/policy/pdpx/v1/decision", 200, C, DECISION),
    Case("POST", f"{SUBSCRIPTIONS}/tca-new", 201, C, sub("policies_DCAE_tca_new")),
    Case("POST", f"{SUBSCRIPTIONS}/tca-1", 200, C, sub(TCA_TOPIC)),
    Case("POST", f"{SUBSCRIPTIONS}/tca-x", 201, body=sub("policies_DCAE_other_x")),
    Case("GET", f"{SUBSCRIPTIONS}/tca-1", 200, C),
    Case("GET", f"{SUBSCRIPTIONS}/other-1", 200, foreign=404),
    Case("GET", f"{SUBSCRIPTIONS}/nobody", 404, C),
    Case("GET", SUBSCRIPTIONS, 200, C),
    Case("GET", f"{SUBSCRIPTIONS}?topic={TCA_TOPIC}", 200, C),
    Case("GET", f"{SUBSCRIPTIONS}?topic={OTHER_TOPIC}", 200),
    Case("GET", f"/events/{TCA_TOPIC}/g/c?timeout=0", 200, C),
    Case("GET", f"/events/{OTHER_TOPIC}/g/c?timeout=0", 200),
    Case("POST", f"/events/{TCA_TOPIC}", 200, body={"hello": "world"}),
    Case("GET", "/topics", 200),
    Case("GET", f"/topics/{TCA_TOPIC}", 200),
    Case("DELETE", f"{SUBSCRIPTIONS}/tca-del", 204, C),
    Case("DELETE", f"{SUBSCRIPTIONS}/other-del", 204, foreign=404),
    # An update: the existing subscription's topic must be the component's too...
    Case("POST", f"{SUBSCRIPTIONS}/other-1", 200, body=sub("policies_DCAE_tca_mine"), foreign=409),
    # ...and so must the topic it asks for.
    Case("POST", f"{SUBSCRIPTIONS}/tca-1", 200, body=sub(OTHER_TOPIC)),
    Case("GET", "/no/such/route", 404, PC),
)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[LiveServer]:
    """A server with the users of ``AUTH_TOML``."""
    live, task = await start_server(make_settings(tmp_path, auth_file=str(auth_file(tmp_path))))
    try:
        yield live
    finally:
        await stop_server(live, task)


@pytest.fixture
async def client(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        yield http


def assert_refusal(r: httpx.Response, status: int, challenge: str | None = CHALLENGE) -> None:
    """A 401 or 403 in the error shape of its path; a 401 carries ``WWW-Authenticate``."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    if r.url.path.startswith(("/events", "/topics")):
        assert set(body) == {"status", "mrstatus", "message"}, body
        assert body["status"] == status and isinstance(body["mrstatus"], int)
        assert isinstance(body["message"], str) and body["message"]
    else:
        assert set(body) == {"code", "error", "details"}, body
        assert body["code"] == {401: "UNAUTHORIZED", 403: "FORBIDDEN"}[status]
        assert isinstance(body["error"], str) and body["error"]
        assert body["details"] == []
    if status == 401:
        assert r.headers["www-authenticate"] == challenge
    else:
        assert "www-authenticate" not in r.headers


@pytest.mark.parametrize("identity", list(IDENTITIES))
async def test_every_route_family_answers_each_role_by_the_rules(
    identity: str, client: httpx.AsyncClient
) -> None:
    """Each identity gets its allowed status on every route it may use and 401 (anonymous) or
    403 (a known user out of bounds) elsewhere, in the path's error shape, changing nothing;
    another component's subscription answers as a missing one would.
    """
    await setup_state(client)
    headers = IDENTITIES[identity]
    for case in CASES:
        expected = case.expected(identity)
        refused = expected >= 400
        before = await snapshot(client, ADMIN) if refused else None
        r = await client.request(case.method, case.path, json=case.body, headers=headers)
        where = f"{identity}: {case.method} {case.path}"
        assert r.status_code == expected, f"{where}: {r.status_code} {r.text}"
        if expected in (401, 403):
            assert_refusal(r, expected)
        if expected == 404 and case.foreign == 404:
            missing = case.path.rsplit("/", 1)[0] + "/nobody"
            gone = await client.request(case.method, missing, headers=headers)
            assert r.text == gone.text.replace("nobody", case.path.rsplit("/", 1)[1]), where
        if refused:
            assert await snapshot(client, ADMIN) == before, f"{where} changed something"


async def test_component_lists_only_subscriptions_on_its_topics(
    client: httpx.AsyncClient,
) -> None:
    """GET /decision/v1/subscription lists a component's topics' subscriptions; admin's, all."""
    await setup_state(client)
    for identity, expected in [
        ("tca", {"tca-1", "tca-del"}),
        ("tca-bot", {"tca-1", "tca-del"}),
        ("admin", {"tca-1", "tca-del", "other-1", "other-del"}),
    ]:
        r = await client.get(SUBSCRIPTIONS, headers=IDENTITIES[identity])
        assert r.status_code == 200, r.text
        assert {s["subscriber_id"] for s in r.json()["subscriptions"]} == expected, identity


async def test_component_long_poll_reads_its_topic(client: httpx.AsyncClient) -> None:
    """A component's long-poll of a topic matching its pattern answers its snapshots."""
    await setup_state(client)
    r = await client.get(f"/events/{TCA_TOPIC}/tca/c1?timeout=0", headers=IDENTITIES["tca"])
    assert r.status_code == 200, r.text
    assert [m for m in r.json() if '"subscriber_id":"tca-1"' in m], r.text


@pytest.mark.parametrize(
    "authorization",
    [
        "",
        "Basic",
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b":empty-user").decode(),
        "Basic " + base64.b64encode(b"tca:\xff\xfe").decode(),
        "Basic " + base64.b64encode(b"tca:wrong-password").decode(),
        "Basic " + base64.b64encode(b"nobody:tca-pw").decode(),
        "Basic " + "A" * 5000,
        "Bearer",
        "Bearer wrong-token-0123456789abcdef",
        "Bearer " + TCA_TOKEN + "x",
        "Digest username=tca",
        "tca:tca-pw",
    ],
)
async def test_bad_credentials_are_401_never_5xx(
    authorization: str, client: httpx.AsyncClient
) -> None:
    """Wrong passwords, unknown users, unknown tokens and malformed Authorization headers are
    a 401 with WWW-Authenticate in the ONAP shape.
    """
    r = await client.get(SUBSCRIPTIONS, headers={"Authorization": authorization})
    assert_refusal(r, 401)


async def test_scrypt_hash_login_is_checked_once_then_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user with a real scrypt password_hash logs in with the password, not with another;
    a repeated successful login is served from the cache without hashing again.
    """
    password = "correct horse battery staple"
    text = f'[users.ops]\npassword_hash = "{auth.hash_password(password)}"\nroles = ["admin"]\n'
    calls: list[str] = []
    verify = auth.ScryptHash.verify

    def counting(self: auth.ScryptHash, given: str) -> bool:
        calls.append(given)
        return verify(self, given)

    monkeypatch.setattr(auth.ScryptHash, "verify", counting)
    settings = make_settings(tmp_path, auth_file=str(auth_file(tmp_path, text)))
    live, task = await start_server(settings)
    try:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
            wrong = await http.get("/topics", headers=basic("ops", "wrong"))
            assert_refusal(wrong, 401, 'Basic realm="policy-pubsub"')  # no tokens: no Bearer
            for _ in range(3):
                r = await http.get("/topics", headers=basic("ops", password))
                assert r.status_code == 200, r.text
    finally:
        await stop_server(live, task)
    assert calls == ["wrong", password]


async def test_failed_login_is_logged_with_address_not_password(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed login logs a warning naming the client address and the user when it exists,
    never the password, the name given for an unknown user (it may be a mistyped password),
    an unsupported scheme (it may be a bare token) nor the Authorization header.
    """
    secret = "hunter2-do-not-log"
    header = basic("tca", secret)
    with caplog.at_level(logging.WARNING, logger="policy_pubsub.api.access"):
        r = await client.get(SUBSCRIPTIONS, headers=header)
        unknown = await client.get(SUBSCRIPTIONS, headers=basic(secret, secret))
        bare = await client.get(SUBSCRIPTIONS, headers={"Authorization": f"{secret} x"})
    assert r.status_code == unknown.status_code == bare.status_code == 401
    assert secret not in unknown.text + bare.text
    failures = [rec.getMessage() for rec in caplog.records if "failed login" in rec.getMessage()]
    assert len(failures) == 3, caplog.text
    assert "127.0.0.1:" in failures[0] and "'tca'" in failures[0], failures
    assert failures[1].endswith("an unknown user"), failures
    assert failures[2].endswith("an unsupported Authorization scheme"), failures
    assert secret not in caplog.text
    assert header["Authorization"].split()[1] not in caplog.text


async def test_a_guessing_client_writes_one_warning_not_one_a_guess(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Twenty wrong passwords from one client are twenty 401s and one failed-login warning;
    the rest are summarised later (``policy_pubsub.repeats``).
    """
    with caplog.at_level(logging.WARNING, logger="policy_pubsub.api.access"):
        for n in range(20):
            r = await client.get(SUBSCRIPTIONS, headers=basic("tca", f"guess-{n}"))
            assert r.status_code == 401
    failures = [rec.getMessage() for rec in caplog.records if "failed login" in rec.getMessage()]
    assert len(failures) == 1, failures


async def test_metrics_is_open_unless_metrics_public_is_off(tmp_path: Path) -> None:
    """With metrics_public (the default) /metrics needs no credentials; with it off, only an
    admin gets past authentication.
    """
    path = str(auth_file(tmp_path))
    for public in (True, False):
        settings = make_settings(tmp_path, auth_file=path, metrics_public=public)
        live, task = await start_server(settings)
        try:
            async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
                anonymous = await http.get("/metrics")
                pap = await http.get("/metrics", headers=IDENTITIES["pap"])
                admin = await http.get("/metrics", headers=ADMIN)
        finally:
            await stop_server(live, task)
        if public:
            assert anonymous.status_code not in (401, 403), anonymous.text
        else:
            assert_refusal(anonymous, 401)
            assert_refusal(pap, 403)
            assert admin.status_code not in (401, 403), admin.text


def signed(method: str, path: str, body: bytes = b"", secret: str = SECRET) -> dict[str, str]:
    """The webhook signature header of a request, made now with a fresh nonce."""
    return {SIGNATURE_HEADER: webhook_signature.sign(secret, method, path.encode(), body)}


UNSIGNED_CHALLENGE = f'HMAC-SHA256 realm="policy-pubsub", header="{SIGNATURE_HEADER}"'


async def test_pap_webhook_signature_missing_wrong_and_right(tmp_path: Path) -> None:
    """With pap_webhook_secret, /pap/* without the signature header or with a wrong one is a
    401 that changes nothing; the right HMAC of the body passes; other routes need none.
    """
    live, task = await start_server(make_settings(tmp_path, pap_webhook_secret=SECRET))
    try:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
            body = (
                b'{"policies": [{"type": "t", "type_version": "1.0.0", "name": "p9", '
                b'"version": "1.0.0", "properties": {}}]}'
            )
            json_type = {"Content-Type": "application/json"}
            missing = await http.post("/pap/v1/policies", content=body, headers=json_type)
            assert_refusal(missing, 401, UNSIGNED_CHALLENGE)
            wrong = await http.post(
                "/pap/v1/policies",
                content=body,
                headers={**json_type, **signed("POST", POLICIES, body, "another secret")},
            )
            assert_refusal(wrong, 401, UNSIGNED_CHALLENGE)
            empty = await http.get(POLICIES, headers=signed("GET", POLICIES))
            assert empty.json() == {"policies": []}, "a refused push changed something"
            right = await http.post(
                "/pap/v1/policies",
                content=body,
                headers={**json_type, **signed("POST", POLICIES, body)},
            )
            assert right.status_code == 200, right.text
            assert [d["policy-id"] for d in right.json()["deployed"]] == ["p9"]
            unsigned_get = await http.get("/pap/v1/policies")
            assert_refusal(unsigned_get, 401, UNSIGNED_CHALLENGE)
            decision = await http.post("/decision/v1", json=DECISION)
            assert decision.status_code == 200, decision.text
    finally:
        await stop_server(live, task)


async def test_pap_webhook_needs_credentials_first_then_signature(tmp_path: Path) -> None:
    """With users and a webhook secret, /pap/* needs both: anonymous is a Basic 401 even when
    signed, a pap user without a signature a signature 401, with both a 200.
    """
    settings = make_settings(
        tmp_path, auth_file=str(auth_file(tmp_path)), pap_webhook_secret=SECRET
    )
    live, task = await start_server(settings)
    try:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
            anonymous = await http.get(POLICIES, headers=signed("GET", POLICIES))
            assert_refusal(anonymous, 401)
            unsigned = await http.get(POLICIES, headers=IDENTITIES["pap"])
            assert_refusal(unsigned, 401, UNSIGNED_CHALLENGE)
            both = await http.get(
                POLICIES, headers={**IDENTITIES["pap"], **signed("GET", POLICIES)}
            )
            assert both.status_code == 200, both.text
    finally:
        await stop_server(live, task)


# Encoded control characters: newline (a regular expression's ``$`` matches before a final
# one), carriage return, both, NUL, tab, unit separator, DEL.
CONTROL = ("%0A", "%0D", "%0D%0A", "%00", "%09", "%1F", "%7F")
SMUGGLED: tuple[tuple[str, str, Any], ...] = (
    ("GET", "/topics{}", None),
    ("GET", f"/topics/{TCA_TOPIC}{{}}", None),
    ("POST", "/pap/v1/policies{}", {"policies": [tosca("p-smuggled")]}),
    ("POST", "/pap/v1/pdp-update{}", load_policy("pdp-update.delta")),
    ("DELETE", "/pap/v1/policies/p0{}", None),
    ("POST", f"/events/{TCA_TOPIC}{{}}", {"hello": "smuggled"}),
    ("POST", f"/events/{OTHER_TOPIC}{{}}", {"hello": "smuggled"}),
    ("GET", f"{SUBSCRIPTIONS}/other-1{{}}", None),
    ("DELETE", f"{SUBSCRIPTIONS}/other-1{{}}", None),
)


@pytest.mark.parametrize("control", CONTROL)
async def test_control_characters_in_the_path_are_refused(
    control: str, client: httpx.AsyncClient
) -> None:
    """A path with an encoded control character (``%0A`` above all) reaches no endpoint and
    no access rule: it is a 400 for everyone (admin included) before any routing, and nothing
    changes.
    """
    await setup_state(client)
    before = await snapshot(client, ADMIN)
    for method, template, body in SMUGGLED:
        path = template.format(control)
        for identity in ("anonymous", "pap", "tca", "tca-bot", "admin"):
            r = await client.request(method, path, json=body, headers=IDENTITIES[identity])
            where = f"{identity}: {method} {path}"
            assert r.status_code == 400, f"{where}: {r.status_code} {r.text}"
    assert await snapshot(client, ADMIN) == before


async def test_control_characters_do_not_skip_the_webhook_signature(tmp_path: Path) -> None:
    """With a webhook secret, an unsigned push to ``/pap/v1/policies%0A`` (or with another
    control character) deploys nothing.
    """
    live, task = await start_server(make_settings(tmp_path, pap_webhook_secret=SECRET))
    try:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
            for control in CONTROL:
                push = {"policies": [tosca("p-smuggled")]}
                r = await http.post(f"/pap/v1/policies{control}", json=push)
                assert r.status_code == 400, f"{control}: {r.status_code} {r.text}"
                delta = load_policy("pdp-update.delta")
                r = await http.post(f"/pap/v1/pdp-update{control}", json=delta)
                assert r.status_code == 400, f"{control}: {r.status_code} {r.text}"
            listed = await http.get(POLICIES, headers=signed("GET", POLICIES))
            assert listed.json() == {"policies": []}, "an unsigned push deployed something"
    finally:
        await stop_server(live, task)


async def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with the openssl command or the
    ``cryptography`` package; skips the test when neither is there.
    """
    cert, key = directory / "cert.pem", directory / "key.pem"
    openssl = shutil.which("openssl")
    if openssl is not None:
        process = await asyncio.create_subprocess_exec(
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, output.decode(errors="replace")
        return cert, key
    try:
        _with_cryptography(cert, key)
    except ImportError:
        pytest.skip("needs the openssl command or the cryptography package to make a cert")
    return cert, key


def _with_cryptography(cert: Path, key: Path) -> None:
    import datetime
    import ipaddress

    # Optional: not a dependency; mypy may not have it.
    from cryptography import x509  # type: ignore[import-not-found, unused-ignore]
    from cryptography.hazmat.primitives import (  # type: ignore[import-not-found, unused-ignore]
        hashes,
        serialization,
    )
    from cryptography.hazmat.primitives.asymmetric import (  # type: ignore[import-not-found, unused-ignore]
        ec,
    )
    from cryptography.x509.oid import NameOID  # type: ignore[import-not-found, unused-ignore]

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


async def test_tls_serves_https_with_the_given_certificate(tmp_path: Path) -> None:
    """With ssl_certfile and ssl_keyfile the server speaks HTTPS with that certificate, and
    Basic auth works over it.
    """
    cert, key = await self_signed_certificate(tmp_path)
    settings = make_settings(
        tmp_path,
        auth_file=str(auth_file(tmp_path)),
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
    )
    live, task = await start_server(settings)
    try:
        trust = ssl.create_default_context(cafile=str(cert))
        url = f"https://127.0.0.1:{live.server.port}"
        async with httpx.AsyncClient(base_url=url, verify=trust, timeout=30) as http:
            health = await http.get("/healthcheck")
            assert health.status_code == 200, health.text
            assert health.url.scheme == "https"
            topics = await http.get("/topics", headers=ADMIN)
            assert topics.status_code == 200, topics.text
    finally:
        await stop_server(live, task)


RIVALS_TOML = """
[users.alpha]
password = "alpha-pw"
roles = ["component"]
topics = ["policies_alpha_*"]

[users.beta]
password = "beta-pw"
roles = ["component"]
topics = ["policies_beta_*"]

[users.admin]
password = "admin-pw"
roles = ["admin"]
"""


async def test_two_components_racing_for_one_subscriber_id_cannot_both_have_it(
    tmp_path: Path,
) -> None:
    """Two components create the same subscriber id at the same moment, each on a topic of
    its own: one gets 201, the other 409, and the stored subscription is the winner's (the
    check is made under the write lock, not before it). Ten ids, ten races.
    """
    settings = make_settings(tmp_path, auth_file=str(auth_file(tmp_path, RIVALS_TOML)))
    live, task = await start_server(settings)
    try:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
            for n in range(10):
                path = f"{SUBSCRIPTIONS}/race-{n}"
                topics = {"alpha": f"policies_alpha_{n}", "beta": f"policies_beta_{n}"}
                answers = await asyncio.gather(
                    *(
                        client.post(path, json=sub(topic), headers=basic(user, f"{user}-pw"))
                        for user, topic in topics.items()
                    )
                )
                by_user = dict(zip(topics, answers, strict=True))
                statuses = sorted(r.status_code for r in answers)
                assert statuses == [201, 409], [r.text for r in answers]
                [winner] = [user for user, r in by_user.items() if r.status_code == 201]
                stored = await client.get(path, headers=basic("admin", "admin-pw"))
                assert stored.json()["subscriber_topic"] == topics[winner]
                [loser] = [user for user in topics if user != winner]
                assert topics[winner] not in by_user[loser].text
    finally:
        await stop_server(live, task)
