"""Exceptions of policy-pubsub, one hierarchy:

PolicyPubSubError
├── InvalidRequest        the request breaks the contract; nothing was changed (400)
├── NotFound              no such subscriber, policy or topic (404)
├── SubscriptionTaken     the subscriber id is held by a subscription the caller may not use (409)
├── SnapshotTooLarge      a snapshot the change causes exceeds the router's largest message;
│                         nothing was changed (413)
├── StoreUnavailable      the database cannot be reached or refused the change (503)
├── RouterUnavailable     the message router cannot be reached (503)
├── MessageRefused        the message router refused one message for good (a dead letter)
└── ClientError           raised by the component SDK (``policy_pubsub.client``)
    ├── RequestRejected       the server answered 4xx: retrying the same request cannot help
    │   └── SubscriptionRejected  the server refused the subscription itself
    ├── ServerUnreachable     no answer within the caller's bound (``give_up_after``)
    └── StateFileError        the subscriber's state file cannot be read or written

The server raises the first five; the SDK raises only ``ClientError`` and its subclasses, so a
component can catch ``ClientError`` (or ``PolicyPubSubError``) and act on the attributes.
"""

from __future__ import annotations

from typing import Any, Protocol


class RoutedMessage(Protocol):
    """What :class:`MessageRefused` tells of the refused message (a router's ``OutMessage``;
    named structurally so that this module needs nothing from the server's packages).
    """

    @property
    def topic(self) -> str: ...

    @property
    def key(self) -> str | None: ...

    @property
    def revision(self) -> int | None: ...


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


class SubscriptionTaken(PolicyPubSubError):
    """A subscribe under an id whose subscription is on a topic the caller may not use;
    nothing was changed. ``subscriber_id`` is the id.
    """

    def __init__(self, subscriber_id: str) -> None:
        super().__init__(f"subscriber id {subscriber_id!r} is taken")
        self.subscriber_id = subscriber_id


class SnapshotTooLarge(PolicyPubSubError):
    """A change would publish a snapshot larger than the router can carry, so it was refused
    before anything was written. ``subscriber_ids`` are the subscribers whose snapshot is too
    large (sorted), ``size`` the largest of those snapshots and ``limit`` the router's largest
    message, both in bytes.
    """

    #: Subscribers named in the message; the rest are counted.
    NAMED = 5

    def __init__(self, subscriber_ids: list[str], size: int, limit: int) -> None:
        named = ", ".join(subscriber_ids[: self.NAMED])
        more = len(subscriber_ids) - self.NAMED
        if more > 0:
            named += f" and {more} more"
        noun = "subscriber" if len(subscriber_ids) == 1 else "subscribers"
        super().__init__(
            f"The snapshot for {noun} {named} would be {size} bytes, over the message "
            f"router's largest message of {limit} bytes; nothing was changed."
        )
        self.subscriber_ids = subscriber_ids
        self.size = size
        self.limit = limit


class StoreUnavailable(PolicyPubSubError):
    """The database cannot be reached, or failed a statement; nothing was acknowledged."""


class RouterUnavailable(PolicyPubSubError):
    """The message router cannot be reached."""


class MessageRefused(PolicyPubSubError):
    """The router refused ``message`` for good: no retry of the same message can succeed (a
    DMaaP 4xx other than 408 and 429, a message over the broker's limit, ...).

    Raised by :meth:`Router.publish`: every message of the batch before ``message`` is durable,
    none after it was published. ``reason`` is the router's own words.
    """

    def __init__(self, message: RoutedMessage, reason: str) -> None:
        super().__init__(f"the message router refused a message on {message.topic!r}: {reason}")
        self.refused = message
        self.reason = reason


class ClientError(PolicyPubSubError):
    """Raised by the component SDK; the base of everything it raises."""


class RequestRejected(ClientError):
    """The server answered 4xx, so the same request would fail again.

    ``status`` is the HTTP status, ``error`` the server's own sentence (ONAP ``error`` or
    DMaaP ``message``), ``details`` the ONAP ``details`` list, ``method`` and ``url`` the request.
    """

    def __init__(
        self,
        method: str,
        url: str,
        status: int,
        error: str,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(f"{method} {url} answered {status}: {error}")
        self.method = method
        self.url = url
        self.status = status
        self.error = error
        self.details = details or []


class SubscriptionRejected(RequestRejected):
    """The server refused the subscription (a bad filter, topic or subscriber id, ...)."""


class ServerUnreachable(ClientError):
    """Requests kept failing for longer than the caller allowed (``give_up_after``).

    ``url`` is the last request's URL, ``attempts`` how many failed in a row, ``reason`` the
    last failure (e.g. ``ConnectError: [Errno 111] Connection refused`` or ``503``).
    """

    def __init__(self, url: str, attempts: int, reason: str) -> None:
        super().__init__(f"{url} unreachable after {attempts} attempts: {reason}")
        self.url = url
        self.attempts = attempts
        self.reason = reason


class StateFileError(ClientError):
    """The state file cannot be read, is not a state file of this subscriber, or cannot be
    written; ``path`` names it and ``reason`` says why.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"state file {path}: {reason}")
        self.path = path
        self.reason = reason
