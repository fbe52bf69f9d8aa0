"""Where the PAP's topic is: the ``pap_topic_url`` setting, parsed."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from policy_pubsub import constants

DEFAULT_TOPIC = "POLICY-PDP-PAP"
EMBEDDED = "embedded"


@dataclass(frozen=True, slots=True)
class PapTopic:
    """Where the PAP's topic is: ``mr_url`` None for this server's own message router, else
    the ``dmaap+http(s)://`` URL of an external DMaaP Message Router; and the topic's name.
    """

    mr_url: str | None
    topic: str

    @classmethod
    def parse(cls, url: str) -> PapTopic:
        """``embedded``, ``embedded/TOPIC``, or ``dmaap+http(s)://[user:pass@]host:port[/prefix]
        [/TOPIC]``: the topic is the last segment of the path (default ``POLICY-PDP-PAP``); for
        an MR, the path before it is the MR's prefix. ``ValueError`` for anything else.
        """
        if url == EMBEDDED or url.startswith(EMBEDDED + "/"):
            return cls(None, _topic(url[len(EMBEDDED) + 1 :], url))
        parts = urlsplit(url)
        if parts.scheme.startswith("kafka"):
            raise ValueError(
                "Kafka is not a transport of the PAP channel: put POLICY-PDP-PAP on a DMaaP "
                "Message Router (dmaap+http(s)://HOST:PORT/POLICY-PDP-PAP) or on this server "
                "('embedded')"
            )
        if parts.scheme not in ("dmaap+http", "dmaap+https") or not parts.hostname:
            raise ValueError(
                "the PAP topic URL must be 'embedded', 'embedded/TOPIC' or "
                "'dmaap+http(s)://HOST:PORT[/TOPIC]'"
            )
        if parts.query or parts.fragment:
            raise ValueError("the PAP topic URL takes no query or fragment")
        prefix, _, last = parts.path.strip("/").rpartition("/")
        topic = _topic(last, url)
        mr_url = urlunsplit(parts._replace(path="/" + prefix if prefix else ""))
        return cls(mr_url, topic)


def _topic(name: str, url: str) -> str:
    if not name:
        return DEFAULT_TOPIC
    if re.fullmatch(constants.TOPIC_PATTERN, name) is None:
        raise ValueError(f"the PAP topic URL {url!r} names no valid topic ({name!r})")
    return name


__all__ = ["DEFAULT_TOPIC", "EMBEDDED", "PapTopic"]
