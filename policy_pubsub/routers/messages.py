"""The message type of the router contract: what the server hands a router to publish."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SharedPart:
    """The end of a snapshot's body that the other snapshots of its change with the same
    filters end with too (the matching policies): a store that holds the messages itself
    keeps it once, numbered ``part`` within the change's revision.
    """

    part: int
    text: str


@dataclass(frozen=True, slots=True)
class OutMessage:
    """A message to append to a topic; ``key`` (the subscriber id) and ``revision`` are set
    for snapshots.
    """

    topic: str
    body: str
    key: str | None = None
    revision: int | None = None
    #: Identifies the message for de-duplication by a router that publishes at least once.
    #: A subscriber's snapshot of one revision always gets the same id.
    dedup_id: str | None = None
    #: How ``body`` ends, when snapshots of the same revision share that end (the body is
    #: whole all the same; routers other than the embedded one ignore this).
    shared: SharedPart | None = None


__all__ = ["OutMessage", "SharedPart"]
