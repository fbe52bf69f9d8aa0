"""``HttpClient``: the one HTTP client of the component SDK and the command line.

It talks to one server, and to the message router the long-polls go to (the server itself
unless told otherwise), over an ``httpx.AsyncClient`` it is given. It owns what every request
shares: the ``User-Agent`` and ``Accept`` headers, the credentials (HTTP Basic or a bearer
token; a router URL that carries its own ``user:password@`` uses those), the JSON body, the
webhook signature of ``/pap/`` requests when a secret is given (``webhook_signature``: over the
time, a fresh nonce, the method, the path and query as sent, and the body), and how an answer
is read.

A request returns a ``Reply`` (a 2xx and its decoded JSON) or raises one of two things:

- ``TransientError``, for what may heal by itself: no connection, a timeout, a cut
  connection, 5xx, 408, 425, 429, an answer that is not JSON; ``kind`` says which, for
  callers that word it;
- ``RequestRejected`` (or the subclass the caller names), for any other 4xx: the same request
  would fail again. ``status``, ``error`` (the server's own sentence) and ``details`` say why.

URLs in exceptions and log lines never carry a password (``without_credentials``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from policy_pubsub import constants, webhook_signature
from policy_pubsub.exceptions import RequestRejected

__all__ = [
    "RETRY_STATUSES",
    "USER_AGENT",
    "BearerAuth",
    "HttpClient",
    "Reply",
    "TransientError",
    "TransientKind",
    "error_text",
    "without_credentials",
]

USER_AGENT = "policy-pubsub-client/0.1"
RETRY_STATUSES = frozenset({408, 425, 429})
ERROR_TEXT_LIMIT = 300  # characters of a non-JSON error body kept for a message

# unreachable: no connection was made; timeout: no answer in time; cut: the connection failed
# otherwise; status: the server answered a status that may heal; answer: the answer is not
# what the request expects (not JSON, or not the shape the caller needs).
TransientKind = Literal["unreachable", "timeout", "cut", "status", "answer"]


class TransientError(Exception):
    """A failure that may heal by itself, so the request may be tried again; ``reason`` is
    one line for the log, ``kind`` what failed (see ``TransientKind``), ``status`` and
    ``error`` the server's answer when it gave one.
    """

    def __init__(
        self,
        url: str,
        reason: str,
        *,
        kind: TransientKind = "answer",
        status: int | None = None,
        error: str = "",
    ) -> None:
        url = without_credentials(url)
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason
        self.kind: TransientKind = kind
        self.status = status
        self.error = error


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer <token>`` on every request."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


@dataclass(frozen=True, slots=True)
class Reply:
    """A 2xx answer (or a 404 the caller accepts): its status and its JSON body, None when
    the answer has no body.
    """

    status: int
    body: Any


class HttpClient:
    """Requests to one server (``url``) and its message router (``router_url``); see the
    module docstring for what each request carries and what it raises. ``http`` stays the
    caller's to close.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        url: str,
        *,
        timeout: float,
        router_url: str | None = None,
        auth: httpx.Auth | tuple[str, str] | None = None,
        pap_secret: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.router_url = (router_url or url).rstrip("/")
        self.timeout = timeout
        self._http = http
        self._auth = auth
        # A router URL with its own credentials (https://user:password@mr:3905) uses them.
        self._router_auth = None if httpx.URL(self.router_url).userinfo else auth
        self._pap_secret = pap_secret or None

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str | int | float] | None = None,
        timeout: float | httpx.Timeout | None = None,
        router: bool = False,
        accept_404: bool = False,
        rejected: type[RequestRejected] = RequestRejected,
    ) -> Reply:
        """Send ``method path`` (``path`` below ``url``, or below ``router_url`` with
        ``router``) with ``body`` as JSON when given; the ``Reply``, or ``TransientError`` /
        ``rejected`` as the module docstring says. With ``accept_404`` a 404 is a ``Reply``
        with no body.
        """
        url = f"{self.router_url if router else self.url}{path}"
        shown = without_credentials(url)
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        content = None
        if body is not None:
            content = json.dumps(body, ensure_ascii=False).encode()
            headers["Content-Type"] = "application/json"
        auth = self._router_auth if router else self._auth
        request = self._http.build_request(
            method,
            url,
            content=content,
            params=params,
            headers=headers,
            timeout=self.timeout if timeout is None else timeout,
        )
        if self._pap_secret is not None and not router and path.startswith("/pap/"):
            # Signed as it goes on the wire: the encoded path and query, the exact body.
            request.headers[constants.SIGNATURE_HEADER] = webhook_signature.sign(
                self._pap_secret, method, request.url.raw_path, content or b""
            )
        try:
            response = await self._http.send(
                request, auth=httpx.USE_CLIENT_DEFAULT if auth is None else auth
            )
        except httpx.HTTPError as exc:
            raise TransientError(shown, _reason(exc), kind=_transport_kind(exc)) from exc
        status = response.status_code
        if status == 404 and accept_404:
            return Reply(status, None)
        if status >= 500 or status in RETRY_STATUSES:
            text = error_text(response)
            reason = f"answered {status} {text}"
            raise TransientError(shown, reason, kind="status", status=status, error=text)
        if status >= 400:
            found = _json(response)
            details = found.get("details") if isinstance(found, dict) else None
            raise rejected(
                method,
                shown,
                status,
                error_text(response),
                details if isinstance(details, list) else None,
            )
        if not response.content:
            return Reply(status, None)
        try:
            return Reply(status, json.loads(response.content))
        except ValueError as exc:
            raise TransientError(
                shown, f"answered {status} with something that is not JSON", status=status
            ) from exc


def without_credentials(url: str) -> str:
    """``url`` fit for a log line or an exception: no ``user:password@``."""
    return re.sub(r"^([a-z]+://)[^/@]*@", r"\1", url)


def error_text(response: httpx.Response) -> str:
    """The server's own sentence on one line: ONAP's ``error``, DMaaP's ``message``, a
    refused PDP_UPDATE's ``responseMessage``, else the start of the body, else the reason
    phrase.
    """
    found = _json(response)
    if isinstance(found, dict):
        status = found.get("response")
        if isinstance(status, dict):
            found = {**found, "message": status.get("responseMessage")}
        for key in ("error", "message"):
            if isinstance(found.get(key), str) and found[key]:
                return " ".join(found[key].split())
    text = " ".join(response.text.split())[:ERROR_TEXT_LIMIT]
    return text or response.reason_phrase or "no reason given"


def _json(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def _reason(exc: httpx.HTTPError) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _transport_kind(exc: httpx.HTTPError) -> TransientKind:
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return "unreachable"
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    return "cut"
