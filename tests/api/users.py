"""The users of the authorisation tests: an auth file with one user per role, their
credentials, and the state and snapshot helpers that check a refused request changed nothing.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx

from tests.api.helpers import tosca

PAP, COMPONENT = "pap", "component"
PASSWORDS = {"pap": "pap-pw", "tca": "tca-pw", "admin": "admin-pw"}
TCA_TOKEN = "tca-token-0123456789abcdef"


def auth_toml(tca_topics: list[str], bot_topics: list[str]) -> str:
    """An auth file with one user per role; ``tca`` and the token user ``tca-bot`` are
    components that may use ``tca_topics`` and ``bot_topics``.
    """
    return f"""
[users.pap]
password = "{PASSWORDS["pap"]}"
roles = ["pap"]

[users.tca]
password = "{PASSWORDS["tca"]}"
roles = ["component"]
topics = {json.dumps(tca_topics)}

[users.tca-bot]
token = "{TCA_TOKEN}"
roles = ["component"]
topics = {json.dumps(bot_topics)}

[users.admin]
password = "{PASSWORDS["admin"]}"
roles = ["admin"]
"""


AUTH_TOML = auth_toml(["policies_DCAE_tca_*"], ["policies_DCAE_tca_*"])
CHALLENGE = 'Basic realm="policy-pubsub", Bearer realm="policy-pubsub"'
SECRET = "webhook-shared-secret"

TCA_TOPIC = "policies_DCAE_tca_tca-1"
OTHER_TOPIC = "policies_DCAE_other_1"
SUBSCRIPTIONS = "/decision/v1/subscription"
DECISION = {"ONAPName": "DCAE", "action": "configure", "resource": {"policy-id": "p0"}}


def basic(user: str, password: str) -> dict[str, str]:
    """An HTTP Basic Authorization header."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


IDENTITIES: dict[str, dict[str, str]] = {
    "anonymous": {},
    "pap": basic("pap", PASSWORDS["pap"]),
    "tca": basic("tca", PASSWORDS["tca"]),
    "tca-bot": {"Authorization": f"Bearer {TCA_TOKEN}"},
    "admin": basic("admin", PASSWORDS["admin"]),
}
ROLE = {"anonymous": None, "pap": PAP, "tca": COMPONENT, "tca-bot": COMPONENT, "admin": "admin"}
ADMIN = IDENTITIES["admin"]


def sub(topic: str) -> dict[str, Any]:
    """A subscription request body on ``topic``."""
    return {"subscriber_topic": topic, "policy-filters": [{"policy-id": "p0"}]}


def auth_file(directory: Path, text: str = AUTH_TOML) -> Path:
    path = directory / "auth.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


async def setup_state(client: httpx.AsyncClient) -> None:
    """Policies p0 and pdel; subscriptions on two of tca's topics and on two others."""
    r = await client.post(
        "/pap/v1/policies", json={"policies": [tosca("p0"), tosca("pdel")]}, headers=ADMIN
    )
    assert r.status_code == 200, r.text
    for subscriber_id, topic in [
        ("tca-1", TCA_TOPIC),
        ("tca-del", "policies_DCAE_tca_del"),
        ("other-1", OTHER_TOPIC),
        ("other-del", "policies_DCAE_other_del"),
    ]:
        r = await client.post(f"{SUBSCRIPTIONS}/{subscriber_id}", json=sub(topic), headers=ADMIN)
        assert r.status_code == 201, r.text


async def snapshot(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    """What a refused request must leave as it was: policies, subscriptions, topic contents."""
    policies = (await client.get("/pap/v1/policies", headers=headers)).json()
    subscriptions = (await client.get(SUBSCRIPTIONS, headers=headers)).json()
    topics = (await client.get("/topics", headers=headers)).json()["topics"]
    messages = {
        t: (await client.get(f"/topics/{t}", headers=headers)).json()["messages"] for t in topics
    }
    return {"policies": policies, "subscriptions": subscriptions, "messages": messages}
