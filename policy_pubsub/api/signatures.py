"""The server's check of the PAP webhook signature (its scheme: ``webhook_signature``).

A request signed with the current scheme passes when its HMAC matches its method, target and
body, its time is within ``pap_signature_window_seconds`` of the server's clock (either way),
and its signature was not accepted before: each accepted signature is recorded in the store
(``store.signatures``) until its time leaves the window, so a captured request cannot be sent
again, to this server or to another replica of the same store. Recorded signatures that have
expired are pruned at most once a minute, after an accepted one.

A legacy ``sha256=`` signature (of the body alone) passes only with ``pap_signature_legacy``;
it is not recorded (identical legacy requests are indistinguishable from replays).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable

from starlette.types import Scope

from policy_pubsub import webhook_signature
from policy_pubsub.exceptions import StoreUnavailable
from policy_pubsub.store import SignatureRepository

log = logging.getLogger(__name__)

PRUNE_EVERY_SECONDS = 60.0
# Kept a little past the window, so that a clock read a moment later still finds it.
EXPIRY_MARGIN_MS = 1000


class SignatureRefused(Exception):
    """The request's signature does not pass: ``message`` is for the client, ``reason`` for
    the log; neither quotes the header or the secret.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


class SignatureCheck:
    """Checks a request's signature header against its method, target and body with the
    shared secret (see the module docstring); ``clock`` gives unix seconds.
    """

    def __init__(
        self,
        *,
        window_seconds: int,
        legacy: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._window = window_seconds
        self._legacy = legacy
        self._clock = clock
        self._pruned_at = float("-inf")

    async def check(
        self,
        secret: bytes,
        header: str,
        method: str,
        target: bytes,
        body: bytes,
        signatures: SignatureRepository,
    ) -> None:
        """Return when the request may pass; ``SignatureRefused`` otherwise, and
        ``StoreUnavailable`` when the replay cache cannot be asked. A signature that passes
        is recorded, so it never passes again.
        """
        header = header.strip()
        if header.lower().startswith(webhook_signature.LEGACY_PREFIX):
            self._check_legacy(secret, header, body)
            return
        parsed = webhook_signature.parse(header)
        if isinstance(parsed, str):
            raise SignatureRefused(
                "The signature header is malformed: send t=<unix seconds>,nonce=<8-64 of "
                "[A-Za-z0-9_-]>,v1=<hex HMAC-SHA256> (README, Security).",
                f"a malformed signature ({parsed})",
            )
        now = self._clock()
        skew = parsed.timestamp - now
        if abs(skew) > self._window:
            where = "ahead of" if skew > 0 else "behind"
            raise SignatureRefused(
                f"The signature's time t is {abs(skew):.0f} s {where} the server's clock; "
                f"at most {self._window} s are accepted. Sign each request when it is sent.",
                f"a signature {abs(skew):.0f} s {where} the clock",
            )
        if not parsed.matches(secret, method, target, body):
            raise SignatureRefused(
                "The signature does not match the request: the HMAC-SHA256 covers t, nonce, "
                "method, path and body, each followed by a newline but the body.",
                "a signature that does not match the request",
            )
        key = hashlib.sha256(parsed.v1.encode()).hexdigest()
        expires_at = (parsed.timestamp + self._window) * 1000 + EXPIRY_MARGIN_MS
        if not await signatures.first_use(key, expires_at):
            raise SignatureRefused(
                "This signature was used before: a signed request is accepted once. "
                "Sign each request anew, with a new nonce.",
                "a replayed signature",
            )
        await self._prune(signatures, now)

    def _check_legacy(self, secret: bytes, header: str, body: bytes) -> None:
        if not self._legacy:
            raise SignatureRefused(
                "The body-only sha256= signature is not accepted: sign with "
                "t=<unix seconds>,nonce=<nonce>,v1=<hex HMAC-SHA256> (README, Security).",
                "a legacy signature, which is turned off",
            )
        expected = webhook_signature.legacy_digest(secret, body)
        if not hmac.compare_digest(header.lower().encode(), expected.encode()):
            raise SignatureRefused(
                "The legacy signature does not match the body.",
                "a legacy signature that does not match the body",
            )

    async def _prune(self, signatures: SignatureRepository, now: float) -> None:
        if now - self._pruned_at < PRUNE_EVERY_SECONDS:
            return
        self._pruned_at = now
        try:
            await signatures.prune(int(now * 1000))
        except StoreUnavailable as exc:
            # Tried again a minute later; nothing depends on it meanwhile.
            log.warning("could not prune the webhook's replay cache: %s", exc.message)


def request_target(scope: Scope) -> bytes:
    """The path and query of a request as the client sent them (what a signature covers)."""
    raw = scope.get("raw_path")
    path: bytes = raw if isinstance(raw, bytes) and raw else scope["path"].encode()
    query: bytes = scope.get("query_string", b"")
    return path + b"?" + query if query else path


__all__ = ["EXPIRY_MARGIN_MS", "SignatureCheck", "SignatureRefused", "request_target"]
