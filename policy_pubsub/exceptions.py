"""Exceptions of policy-pubsub, one hierarchy:

PolicyPubSubError
├── InvalidRequest        the request breaks the contract; nothing was changed (400)
├── NotFound              no such subscriber, policy or topic (404)
├── StoreUnavailable      the database cannot be reached or refused the change (503)
└── RouterUnavailable     the message router cannot be reached (503)
"""

from __future__ import annotations

from typing import Any


class PolicyPubSubError(Exception):
    """The base of every policy-pubsub exception."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(PolicyPubSubError):
    """The request breaks the contract; ``details`` name each bad field."""

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.details = details or []


class NotFound(PolicyPubSubError):
    """No such resource; ``kind`` is ``subscription``, ``policy`` or ``topic``."""

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"no {kind} {key!r}")
        self.kind = kind
        self.key = key


class StoreUnavailable(PolicyPubSubError):
    """The database cannot be reached, or failed a statement; nothing was acknowledged."""


class RouterUnavailable(PolicyPubSubError):
    """The message router cannot be reached."""
