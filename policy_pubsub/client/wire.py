"""The SDK's HTTP calls: subscribe, read a subscription, decide, poll, unsubscribe.

Every call returns the decoded answer or raises one of two things: ``Retry`` for what may
heal by itself (no connection, a timeout, a cut connection, 5xx, 429, an answer that is not
JSON, a topic the router does not have yet), or ``RequestRejected`` for a 4xx that would fail
again. The policy server and the message router may be two different services (``router_url``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Generator, Mapping
from typing import Any

import httpx

from policy_pubsub.exceptions import RequestRejected, SubscriptionRejected

SUBSCRIPTION_PATH = "/decision/v1/subscription/"
DECISION_PATH = "/decision/v1"
EVENTS_PATH = "/events/"
USER_AGENT = "policy-pubsub-client/0.1"
RETRY_STATUSES = frozenset({408, 425, 429})


class Retry(Exception):
    """A failure that may heal by itself; ``reason`` is one line for the log."""

    def __init__(self, url: str, reason: str) -> None:
        url = without_credentials(url)
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer <token>`` on every request."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


class Wire:
    """The requests a subscriber makes, over one ``httpx.AsyncClient``; ``auth`` (HTTP Basic
    as a ``(user, password)`` tuple, or any ``httpx.Auth``) goes with every request.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        url: str,
        router_url: str,
        request_timeout: float,
        auth: httpx.Auth | tuple[str, str] | None = None,
    ) -> None:
        self._http = http
        self._auth = auth
        # A router URL with its own credentials (https://user:password@mr:3905) uses them.
        self._router_auth = None if httpx.URL(router_url).userinfo else auth
        self._url = url.rstrip("/")
        self._router_url = router_url.rstrip("/")
        self._timeout = httpx.Timeout(request_timeout)
        self._request_timeout = request_timeout

    async def subscribe(self, subscriber_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Insert or update the subscription; the answer holds ``revision`` and ``policies``."""
        url = f"{self._url}{SUBSCRIPTION_PATH}{subscriber_id}"
        answer = await self._json("POST", url, rejected=SubscriptionRejected, json=body)
        if not isinstance(answer, dict) or not isinstance(answer.get("revision"), int):
            raise Retry(url, "the subscribe answer has no revision")
        return answer

    async def subscription(self, subscriber_id: str) -> dict[str, Any] | None:
        """The subscription record with its ``status``; None when the server has none."""
        url = f"{self._url}{SUBSCRIPTION_PATH}{subscriber_id}"
        answer = await self._json("GET", url, none_if_404=True)
        if answer is None:
            return None
        if not isinstance(answer, dict):
            raise Retry(url, "the subscription answer is not an object")
        return answer

    async def unsubscribe(self, subscriber_id: str) -> bool:
        """Delete the subscription; False when there was none."""
        url = f"{self._url}{SUBSCRIPTION_PATH}{subscriber_id}"
        return await self._json("DELETE", url, none_if_404=True) is not None

    async def decide(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The policies the decision API returns for the filters in ``body``."""
        url = f"{self._url}{DECISION_PATH}"
        answer = await self._json("POST", url, json=body)
        if not isinstance(answer, dict) or not isinstance(answer.get("policies"), dict):
            raise Retry(url, "the decision answer has no policies")
        policies: dict[str, Any] = answer["policies"]
        return policies

    async def poll(
        self, topic: str, group: str, consumer: str, *, timeout: float, limit: int
    ) -> list[Any]:
        """One long-poll: the messages (oldest first) or ``[]`` after ``timeout`` seconds."""
        url = f"{self._router_url}{EVENTS_PATH}{topic}/{group}/{consumer}"
        params = {"timeout": int(timeout * 1000), "limit": limit}
        # The read timeout is the hold time plus a whole request timeout: a poll the router
        # answers late is not an error.
        read = httpx.Timeout(self._request_timeout, read=timeout + self._request_timeout)
        answer = await self._json(
            "GET", url, timeout=read, params=params, retry_404=True, router=True
        )
        if not isinstance(answer, list):
            raise Retry(url, "the poll answer is not a JSON array")
        return answer

    async def _json(
        self,
        method: str,
        url: str,
        *,
        rejected: type[RequestRejected] = RequestRejected,
        none_if_404: bool = False,
        retry_404: bool = False,
        timeout: httpx.Timeout | None = None,
        router: bool = False,
        **kwargs: Any,
    ) -> Any:
        auth = self._router_auth if router else self._auth
        shown = without_credentials(url)
        try:
            response = await self._http.request(
                method,
                url,
                timeout=timeout or self._timeout,
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
                auth=httpx.USE_CLIENT_DEFAULT if auth is None else auth,
                **kwargs,
            )
        except httpx.TransportError as exc:
            raise Retry(shown, f"{type(exc).__name__}: {exc}".rstrip(": ")) from exc
        status = response.status_code
        if status == 404 and none_if_404:
            return None
        if status >= 500 or status in RETRY_STATUSES or (status == 404 and retry_404):
            # A topic the router does not have (yet): a server restored from an old backup,
            # or a DMaaP router that creates topics lazily. Waiting may heal it.
            raise Retry(shown, f"answered {status} {_error_text(response)}".rstrip())
        if status >= 400:
            body = _body(response)
            details = body.get("details") if isinstance(body, dict) else None
            raise rejected(
                method,
                shown,
                status,
                _error_text(response),
                details if isinstance(details, list) else None,
            )
        if status == 204 or not response.content:
            return {}
        try:
            return json.loads(response.content)
        except ValueError as exc:
            raise Retry(shown, f"answered {status} with something that is not JSON") from exc


def without_credentials(url: str) -> str:
    """``url`` fit for a log line or an exception: no ``user:password@``."""
    return re.sub(r"^([a-z]+://)[^/@]*@", r"\1", url)


def _body(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def _error_text(response: httpx.Response) -> str:
    """The server's own sentence: ONAP's ``error``, DMaaP's ``message``, else the text."""
    body = _body(response)
    if isinstance(body, dict):
        for key in ("error", "message"):
            if isinstance(body.get(key), str) and body[key]:
                return str(body[key])
    return response.text.strip()[:300]
