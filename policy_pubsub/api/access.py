"""Who may call what: the ASGI middleware in front of every route, and the per-topic checks.

Each endpoint of the route table (``policy_pubsub.api.routes``) names its ``Access`` rule;
``admin`` may use everything. The middleware finds the endpoint a request reaches by matching
the table's routes, the very routes the router matches, so the two cannot disagree; it runs
before any endpoint reads a body, also in front of the raw-ASGI long-poll:

    family         paths                                   who (admin: always)
    health         /healthcheck                            anyone, no credentials
    openapi        /openapi.json                           anyone: it describes the contract
    metrics        /metrics                                anyone if metrics_public, else admin
    pap            /pap/v1/...                             pap (+ the webhook signature if set)
    subscriptions  /decision/v1/subscription[/{id}]        component, on its topics (endpoint)
    decision       /policy/pdpx/v1/decision, /decision/v1  component
    poll           /events/{topic}/{group}/{consumer}      component, on its topics (here)
    publish        /events/{topic}                         admin
    topics         /topics[/{topic}]                       admin
    other          a path no endpoint serves (then a 404)  any known user

A path with or without a final ``/`` that the router redirects to an endpoint takes that
endpoint's rule.

Missing, malformed or wrong credentials are a 401 with ``WWW-Authenticate``; a known user out
of bounds is a 403; both in the error shape of the path (ONAP, or DMaaP on /events and /topics).
The authenticated ``User`` is put in the request's scope state (``request.state.user``) for the
per-topic checks of the subscription endpoints: ``require_topic``, ``require_subscription``,
``may_read``. A component's topics are fnmatch globs matched case-sensitively.

With ``pap_webhook_secret`` set, every ``/pap/*`` request must also carry
``X-Policy-Pubsub-Signature: t=<unix seconds>,nonce=<nonce>,v1=<hex HMAC-SHA256>`` over its
time, nonce, method, path and body, accepted once within the time window
(``policy_pubsub.api.signatures``); the body is read (up to ``max_body_bytes``) only after the
credentials were accepted, and handed on unchanged.
"""

from __future__ import annotations

import logging
from base64 import b64decode
from binascii import Error as Base64Error
from collections.abc import Callable
from typing import Any

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from policy_pubsub import constants
from policy_pubsub.api.errors import ApiError, error_response, from_domain
from policy_pubsub.api.signatures import SignatureCheck, SignatureRefused, request_target
from policy_pubsub.api.state import app_state
from policy_pubsub.api.table import Access, RouteTable
from policy_pubsub.auth import ADMIN, REALM, Authenticator, User
from policy_pubsub.config import Settings
from policy_pubsub.exceptions import StoreUnavailable
from policy_pubsub.repeats import RepeatedWarnings

log = logging.getLogger(__name__)

SIGNATURE_HEADER = constants.SIGNATURE_HEADER
SIGNATURE_CHALLENGE = f'HMAC-SHA256 realm="{REALM}", header="{SIGNATURE_HEADER}"'
MAX_AUTHORIZATION_CHARS = 4096


class AccessMiddleware:
    """Authenticates every request (Basic or Bearer), applies the ``Access`` rule of the
    endpoint it reaches in ``table``, checks the PAP webhook signature, and puts the user in
    the scope state. Does nothing when the server has neither an auth file nor a webhook
    secret.
    """

    def __init__(
        self,
        app: ASGIApp,
        settings: Settings,
        authenticator: Authenticator | None,
        table: RouteTable,
    ) -> None:
        self.app = app
        self.settings = settings
        self.authenticator = authenticator
        self.table = table
        secret = settings.pap_webhook_secret
        self.secret = secret.get_secret_value().encode() if secret is not None else None
        self.signatures = SignatureCheck(
            window_seconds=settings.pap_signature_window_seconds,
            legacy=settings.pap_signature_legacy,
        )
        # Refused credentials and signatures: one line per client host and reason, then a
        # summary a minute while they repeat (a guessing client writes no line per guess).
        self.refusals = RepeatedWarnings(log)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.authenticator is None and self.secret is None):
            await self.app(scope, receive, send)
            return
        rule, params = self.table.access(scope)
        try:
            if self.authenticator is not None and not rule.open.applies(self.settings):
                user = await self._authenticate(self.authenticator, scope)
                _authorize(user, rule, params, scope)
                scope.setdefault("state", {})["user"] = user
            if rule.signed and self.secret is not None:
                replay = await self._check_signature(self.secret, scope, receive)
                if replay is None:
                    return  # the client left while sending the body: nobody to answer
                receive = replay
        except ApiError as error:
            await error_response(self.table.shape(scope), error)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _authenticate(self, authenticator: Authenticator, scope: Scope) -> User:
        def refuse(message: str, why: str | None) -> ApiError:
            if why is not None:
                self.refusals.warn(
                    (_host(scope), why), "failed login from %s: %s", _client(scope), why
                )
            return ApiError(401, message, headers={"WWW-Authenticate": authenticator.challenge})

        header = _header(scope, b"authorization")
        if header is None or not header.strip():
            raise refuse(
                "Authentication is required: send HTTP Basic credentials or a Bearer token "
                "of a user of the server's auth file.",
                None,
            )
        if len(header) > MAX_AUTHORIZATION_CHARS:
            raise refuse("The Authorization header is too long.", "an oversized header")
        scheme, _, value = header.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "basic":
            credentials = _basic(value)
            if credentials is None:
                raise refuse(
                    "The Authorization header is malformed: use Basic base64(user:password).",
                    "a malformed Basic header",
                )
            name, password = credentials
            user = await authenticator.basic(name, password)
            if user is None:
                # A known user's name is logged; an unknown "name" may be a mistyped password.
                why = "an unknown user"
                if authenticator.knows(name):
                    why = f"a wrong password for user {name!r}"
                raise refuse("The user name or password is wrong.", why)
            return user
        if scheme.lower() == "bearer":
            user = authenticator.bearer(value) if value else None
            if user is None:
                raise refuse("The bearer token is not valid.", "an unknown bearer token")
            return user
        # The "scheme" may be a bare token or password: it is neither echoed nor logged.
        raise refuse(
            "The Authorization scheme is not supported; use Basic or Bearer.",
            "an unsupported Authorization scheme",
        )

    async def _check_signature(
        self, secret: bytes, scope: Scope, receive: Receive
    ) -> Receive | None:
        """A ``receive`` that hands the already read body on, once the signature passed
        (``SignatureCheck``: the request's HMAC, its time, never seen before); None when the
        client left; ``ApiError`` 401 (or 413, or 503 when the store cannot be asked) otherwise.
        """
        given = _header(scope, SIGNATURE_HEADER.lower().encode())
        if given is None:
            self.refusals.warn(
                (_host(scope), "unsigned"),
                "refused a PAP webhook request from %s: no signature",
                _client(scope),
            )
            raise _unsigned(
                f"The PAP webhook needs a {SIGNATURE_HEADER} header: t=<unix seconds>,"
                "nonce=<nonce>,v1=<hex HMAC-SHA256 of the request> (README, Security)."
            )
        body = await _read_body(scope, receive, self.settings.max_body_bytes)
        if body is None:
            return None
        store = app_state(HTTPConnection(scope)).store
        try:
            await self.signatures.check(
                secret, given, scope["method"], request_target(scope), body, store.signatures
            )
        except SignatureRefused as refused:
            self.refusals.warn(
                (_host(scope), refused.reason),
                "refused a PAP webhook request from %s: %s",
                _client(scope),
                refused.reason,
            )
            raise _unsigned(refused.message) from None
        except StoreUnavailable as exc:
            app_state(HTTPConnection(scope)).outages.refused(exc)
            raise from_domain(exc) from None
        return _replay(body, receive)


def _authorize(user: User, rule: Access, params: dict[str, Any], scope: Scope) -> None:
    """``ApiError`` 403 unless ``user`` may use the endpoint (and the topic in its path)."""
    if not user.has_any(rule.roles):
        needed = " or ".join([*sorted(rule.roles), ADMIN])
        raise ApiError(
            403,
            f"The {user.describe()} may not use {scope['method']} {scope['path'][:300]}; "
            f"that needs the role {needed}.",
        )
    topic = params.get(rule.topic) if rule.topic is not None else None
    if isinstance(topic, str) and not user.may_read(topic):
        raise ApiError(403, _topic_refusal(user, topic))


def _topic_refusal(user: User, topic: str) -> str:
    patterns = ", ".join(user.topics) or "none"
    return (
        f"The {user.describe()} may not use topic {topic[:300]!r}; "
        f"its topic patterns are: {patterns}."
    )


def _unsigned(message: str) -> ApiError:
    return ApiError(401, message, headers={"WWW-Authenticate": SIGNATURE_CHALLENGE})


# -- per-topic checks for the endpoints -------------------------------------------------------


def current_user(connection: HTTPConnection) -> User | None:
    """The authenticated user of the request; None when the server has no auth file."""
    user = connection.scope.get("state", {}).get("user")
    return user if isinstance(user, User) else None


def _bounded(connection: HTTPConnection) -> User | None:
    """The user whose topic patterns bound this request: anyone authenticated but admin."""
    user = current_user(connection)
    return None if user is None or user.is_admin else user


def may_read(connection: HTTPConnection, topic: str) -> bool:
    """Whether the request's user may see subscriptions on ``topic`` and read it."""
    user = _bounded(connection)
    return user is None or user.may_read(topic)


def require_topic(connection: HTTPConnection, topic: str) -> None:
    """``ApiError`` 403 unless the request's user may use ``topic``."""
    user = _bounded(connection)
    if user is not None and not user.may_read(topic):
        raise ApiError(403, _topic_refusal(user, topic))


def topic_check(connection: HTTPConnection) -> Callable[[str], bool] | None:
    """What the request's user may use, for the service to decide under its write lock (so a
    race cannot hand one component's subscription to another); None for admins and without
    auth.
    """
    user = _bounded(connection)
    return None if user is None else user.may_read


# -- reading the request ----------------------------------------------------------------------


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return None


def _basic(value: str) -> tuple[str, str] | None:
    """``(user, password)`` of a Basic credential, None when it is not one."""
    try:
        decoded = b64decode(value.encode("ascii"), validate=True).decode("utf-8")
    except (UnicodeError, Base64Error):
        return None
    name, colon, password = decoded.partition(":")
    if not colon or not name:
        return None
    return name, password


def _host(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


def _client(scope: Scope) -> str:
    client = scope.get("client")
    if not client:
        return "an unknown address"
    host, port = client[0], client[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes | None:
    """The whole body, None if the client left; ``ApiError`` 413 past ``limit``."""
    declared = _header(scope, b"content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"The request body is larger than the limit of {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"The request body is larger than the limit of {limit} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` first, then whatever the client sends next."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


__all__ = [
    "SIGNATURE_HEADER",
    "AccessMiddleware",
    "current_user",
    "may_read",
    "require_topic",
    "topic_check",
]
