"""Subjects of the NATS JetStream router, and the reversible encoding of names into tokens.

A NATS subject is a list of tokens separated by ``.``; a token must not contain ``.``, ``*``,
``>`` or white space, and NATS recommends letters, digits, ``-`` and ``_``. Topic names and
subscriber ids may hold ``.`` and ``:``, so each becomes one token: letters, digits and ``-``
stay, every other character becomes ``_`` and two hex digits per UTF-8 byte (``.`` is ``_2E``,
``_`` is ``_5F``). ``_`` alone stands for the empty string. The encoding is injective, so
distinct names never share a subject, and :func:`decode_token` inverts it.

Subjects of a deployment whose stream is ``S``::

    S.t.<topic>.k.<subscriber>   the subscriber's snapshots (the stream keeps the newest)
    S.t.<topic>.d.<dedup id>     a message without key but with a de-duplication id
    S.t.<topic>.m.<nuid>         any other message without key
    S.w.<topic>.<kind>.<token>   the stream's headers-only RePublish of each stored message,
                                 on core NATS: the wake-up of held reads (not in the stream)
    S.p.<topic>.<group>          core NATS: a replica moved a consumer group's position
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

_SAFE = frozenset(string.ascii_letters + string.digits + "-")
_TOKEN = re.compile(r"^(?:[A-Za-z0-9-]|_[0-9A-F]{2})+$")
_ESCAPE = re.compile(rb"_([0-9A-F]{2})")
STREAM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Every ASCII character to its token text, for str.translate (the common case, in C).
_ASCII_TOKENS = {code: chr(code) if chr(code) in _SAFE else f"_{code:02X}" for code in range(128)}

KIND_SNAPSHOT = "k"
KIND_DEDUP = "d"
KIND_UNIQUE = "m"


def encode_token(name: str) -> str:
    """One subject token that stands for ``name``; :func:`decode_token` gives it back."""
    if not name:
        return "_"
    if name.isascii():
        return name.translate(_ASCII_TOKENS)
    parts: list[str] = []
    for char in name:
        if char in _SAFE:
            parts.append(char)
        else:
            parts.extend(f"_{byte:02X}" for byte in char.encode())
    return "".join(parts)


def decode_token(token: str) -> str:
    """The name a token made by :func:`encode_token` stands for; ``ValueError`` otherwise."""
    if token == "_":
        return ""
    if not _TOKEN.match(token):
        raise ValueError(f"not an encoded subject token: {token!r}")
    if "_" not in token:
        return token  # letters, digits and '-' only: the token is the name
    raw = _ESCAPE.sub(lambda m: bytes((int(m[1], 16),)), token.encode())
    decoded = raw.decode()  # UnicodeDecodeError is a ValueError
    if encode_token(decoded) != token:
        raise ValueError(f"not the canonical encoding of {decoded!r}: {token!r}")
    return decoded


@dataclass(frozen=True, slots=True)
class Subjects:
    """The subjects of one deployment's stream."""

    stream: str

    def __post_init__(self) -> None:
        if not STREAM_NAME.match(self.stream):
            raise ValueError(
                f"stream name {self.stream!r}: use 1 to 64 letters, digits, '-' or '_'"
            )

    @property
    def stream_subjects(self) -> str:
        """The subjects the stream captures."""
        return f"{self.stream}.t.>"

    @property
    def wake_subjects(self) -> str:
        """Where the stream republishes (headers only) every message it stored."""
        return f"{self.stream}.w.>"

    def message(self, topic: str, kind: str, token: str) -> str:
        return f"{self.stream}.t.{encode_token(topic)}.{kind}.{token}"

    def snapshot(self, topic: str, key: str) -> str:
        return self.message(topic, KIND_SNAPSHOT, encode_token(key))

    def topic_filter(self, topic: str) -> str:
        """Every message subject of one topic."""
        return f"{self.stream}.t.{encode_token(topic)}.>"

    @property
    def position_subjects(self) -> str:
        """Every consumer group's position announcements."""
        return f"{self.stream}.p.*.*"

    def position(self, topic: str, group: str) -> str:
        return f"{self.stream}.p.{encode_token(topic)}.{encode_token(group)}"

    def group_of_position(self, subject: str) -> tuple[str, str] | None:
        """The (topic, group) of a position announcement, or None if it is not this stream's."""
        parts = subject.split(".")
        if len(parts) != 4 or parts[0] != self.stream or parts[1] != "p":
            return None
        try:
            return decode_token(parts[2]), decode_token(parts[3])
        except ValueError:
            return None

    def topic_of_message(self, subject: str) -> str | None:
        """The topic a stored message's subject belongs to, or None if it is not this
        stream's.
        """
        parts = subject.split(".")
        if len(parts) != 5 or parts[0] != self.stream or parts[1] != "t":
            return None
        try:
            return decode_token(parts[2])
        except ValueError:
            return None

    def topic_of_wake(self, subject: str) -> str | None:
        """The topic a republished subject belongs to, or None if it is not this stream's."""
        parts = subject.split(".")
        if len(parts) != 5 or parts[0] != self.stream or parts[1] != "w":
            return None
        try:
            return decode_token(parts[2])
        except ValueError:
            return None
