"""Timestamps on the wire: epoch milliseconds written as RFC 3339 in UTC."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["rfc3339"]


def rfc3339(ms: int | None) -> str | None:
    """``ms`` (epoch milliseconds) as ``YYYY-MM-DDTHH:MM:SS.mmmZ``; None stays None."""
    if ms is None:
        return None
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
