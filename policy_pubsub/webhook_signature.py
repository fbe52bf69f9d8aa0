"""The PAP webhook's signature: what a signer puts in ``X-Policy-Pubsub-Signature`` and how
a header is read, by one rule for the server, the CLI and the SDK (README, "Security").

The header is ``t=<unix seconds>,nonce=<nonce>,v1=<hex HMAC-SHA256>``: three fields, in any
order, separated by commas. The nonce is 8 to 64 characters of ``[A-Za-z0-9_-]``, new for
each request, so that two identical requests in one second still sign differently. The HMAC,
keyed with the shared secret, is of the canonical string, the five parts joined by a newline:

    <t> LF <nonce> LF <METHOD> LF <path> LF <body>

``METHOD`` is upper case; ``path`` is the request target exactly as sent (percent-encoded,
with ``?`` and the query string when there is one); ``body`` is the body's bytes, empty for a
GET or DELETE. A newline cannot occur in the first four parts, so no two requests share a
canonical string. In a shell::

    printf '%s\\n%s\\n%s\\n%s\\n%s' "$t" "$nonce" POST /pap/v1/policies "$BODY" \\
      | openssl dgst -sha256 -hmac "$SECRET"

The legacy scheme, ``sha256=<hex HMAC-SHA256 of the body>``, covers neither the request nor
the time and can be replayed; the server takes it only when told to (``pap_signature_legacy``).

The module needs nothing beyond the standard library: the component SDK ships it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

__all__ = [
    "LEGACY_PREFIX",
    "NONCE_PATTERN",
    "Signature",
    "canonical",
    "digest",
    "legacy_digest",
    "parse",
    "sign",
]

LEGACY_PREFIX = "sha256="
NONCE_PATTERN = re.compile(r"[A-Za-z0-9_-]{8,64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
_FIELDS = frozenset({"t", "nonce", "v1"})


@dataclass(frozen=True, slots=True)
class Signature:
    """A header of the current scheme, read: its time, its nonce and its HMAC (lower-case
    hex); nothing is checked against a request yet.
    """

    timestamp: int
    nonce: str
    v1: str

    def matches(self, secret: bytes, method: str, target: bytes, body: bytes) -> bool:
        """Whether ``v1`` is the HMAC of this request's canonical string (in constant time)."""
        expected = digest(secret, self.timestamp, self.nonce, method, target, body)
        return hmac.compare_digest(self.v1.encode(), expected.encode())


def canonical(timestamp: int, nonce: str, method: str, target: bytes, body: bytes) -> bytes:
    """The signed string of a request (module docstring): time, nonce, method, target, body."""
    head = f"{timestamp}\n{nonce}\n{method.upper()}\n".encode()
    return head + target + b"\n" + body


def digest(
    secret: bytes, timestamp: int, nonce: str, method: str, target: bytes, body: bytes
) -> str:
    """The hex HMAC-SHA256 of the request's canonical string."""
    message = canonical(timestamp, nonce, method, target, body)
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def legacy_digest(secret: bytes, body: bytes) -> str:
    """The legacy header value: ``sha256=`` and the hex HMAC-SHA256 of the body alone."""
    return LEGACY_PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


def sign(
    secret: str | bytes,
    method: str,
    target: bytes,
    body: bytes,
    *,
    timestamp: int | None = None,
    nonce: str | None = None,
) -> str:
    """The header value that signs this request: now, with a fresh random nonce, unless told
    otherwise. ``target`` is the path and query exactly as they go on the wire.
    """
    key = secret.encode() if isinstance(secret, str) else secret
    when = int(time.time()) if timestamp is None else timestamp
    once = secrets.token_hex(16) if nonce is None else nonce
    return f"t={when},nonce={once},v1={digest(key, when, once, method, target, body)}"


def parse(header: str) -> Signature | str:
    """The ``Signature`` a header of the current scheme carries, or a short reason why it is
    not one (for the refusal; it never quotes the header).
    """
    fields: dict[str, str] = {}
    for part in header.split(","):
        name, equals, value = part.strip().partition("=")
        if not equals or name not in _FIELDS:
            return "a field other than t, nonce and v1"
        if name in fields:
            return f"the field {name} twice"
        fields[name] = value.strip()
    missing = sorted(_FIELDS - fields.keys())
    if missing:
        return "no " + " and no ".join(missing)
    if _TIMESTAMP.fullmatch(fields["t"]) is None:
        return "t is not a time in unix seconds"
    if NONCE_PATTERN.fullmatch(fields["nonce"]) is None:
        return "the nonce is not 8 to 64 of [A-Za-z0-9_-]"
    if _HEX_DIGEST.fullmatch(fields["v1"]) is None:
        return "v1 is not a hex HMAC-SHA256"
    return Signature(int(fields["t"]), fields["nonce"], fields["v1"].lower())
