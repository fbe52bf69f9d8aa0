"""The SDK's requests: subscribe, read a subscription, decide, poll, unsubscribe.

Each is one request through the shared ``HttpClient`` and returns the decoded answer, or
raises what it raises: ``TransientError`` for what may heal by itself (here also an answer
without the fields the SDK needs, and a topic the router does not have yet),
``RequestRejected`` (for a subscribe, ``SubscriptionRejected``) for a 4xx that would fail
again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from policy_pubsub.client.http import HttpClient, TransientError
from policy_pubsub.exceptions import RequestRejected, SubscriptionRejected

__all__ = ["DECISION_PATH", "EVENTS_PATH", "SUBSCRIPTION_PATH", "Wire"]

SUBSCRIPTION_PATH = "/decision/v1/subscription/"
DECISION_PATH = "/decision/v1"
EVENTS_PATH = "/events/"


class Wire:
    """The requests a subscriber makes, over one ``HttpClient``."""

    def __init__(self, client: HttpClient) -> None:
        self._client = client

    async def subscribe(self, subscriber_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Insert or update the subscription; the answer holds ``revision`` and ``policies``."""
        path = f"{SUBSCRIPTION_PATH}{subscriber_id}"
        answer = (
            await self._client.request("POST", path, body=body, rejected=SubscriptionRejected)
        ).body
        if not isinstance(answer, dict) or not isinstance(answer.get("revision"), int):
            raise TransientError(self._url(path), "the subscribe answer has no revision")
        return answer

    async def subscription(
        self, subscriber_id: str, *, with_policies: bool = False
    ) -> dict[str, Any] | None:
        """The subscription record with its ``status`` (and, ``with_policies``, the policies
        of the snapshot of ``status.last_revision`` under ``policies``); None when the server
        has none.
        """
        path = f"{SUBSCRIPTION_PATH}{subscriber_id}"
        if with_policies:
            path += "?policies=true"
        reply = await self._client.request("GET", path, accept_404=True)
        if reply.status == 404:
            return None
        if not isinstance(reply.body, dict):
            raise TransientError(self._url(path), "the subscription answer is not an object")
        return reply.body

    async def unsubscribe(self, subscriber_id: str) -> bool:
        """Delete the subscription; False when there was none."""
        path = f"{SUBSCRIPTION_PATH}{subscriber_id}"
        reply = await self._client.request("DELETE", path, accept_404=True)
        return reply.status != 404

    async def decide(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The policies the decision API returns for the filters in ``body``."""
        answer = (await self._client.request("POST", DECISION_PATH, body=body)).body
        if not isinstance(answer, dict) or not isinstance(answer.get("policies"), dict):
            raise TransientError(self._url(DECISION_PATH), "the decision answer has no policies")
        policies: dict[str, Any] = answer["policies"]
        return policies

    async def poll(
        self, topic: str, group: str, consumer: str, *, timeout: float, limit: int
    ) -> list[Any]:
        """One long-poll: the messages (oldest first) or ``[]`` after ``timeout`` seconds."""
        path = f"{EVENTS_PATH}{topic}/{group}/{consumer}"
        params = {"timeout": int(timeout * 1000), "limit": limit}
        # The read timeout is the hold time plus a whole request timeout: a poll the router
        # answers late is not an error.
        request_timeout = self._client.timeout
        read = httpx.Timeout(request_timeout, read=timeout + request_timeout)
        try:
            reply = await self._client.request(
                "GET", path, params=params, timeout=read, router=True
            )
        except RequestRejected as exc:
            if exc.status != 404:
                raise
            # A topic the router does not have (yet): a server restored from an old backup,
            # or a DMaaP router that creates topics lazily. Waiting may heal it.
            reason = f"answered 404 {exc.error}".rstrip()
            raise TransientError(
                exc.url, reason, kind="status", status=404, error=exc.error
            ) from exc
        if not isinstance(reply.body, list):
            raise TransientError(
                f"{self._client.router_url}{path}", "the poll answer is not a JSON array"
            )
        return reply.body

    def _url(self, path: str) -> str:
        return f"{self._client.url}{path}"
