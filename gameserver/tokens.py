"""Signed resume tokens: ``base64url(json claims) . base64url(HMAC-SHA256)``.

A token names a session and its character and carries an expiry. Verification is constant-time on the
signature and rejects forged, malformed and expired tokens alike with ``BadToken`` (the router turns it into
``error bad_token``). Whether the session still exists is the registry's business, not the token's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

from .errors import BadToken

__all__ = ["BadToken", "TokenClaims", "TokenSigner"]


@dataclass(frozen=True)
class TokenClaims:
    session: str
    name: str
    expires: float


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Issues and verifies resume tokens with one HMAC key.

    ``key=None`` draws a random key: tokens then do not survive a restart (``ephemeral`` is True so the
    server can log a warning).
    """

    def __init__(self, key: str | bytes | None, ttl: float) -> None:
        self.ephemeral = key is None
        if key is None:
            key = secrets.token_bytes(32)
        self._key = key.encode() if isinstance(key, str) else key
        self.ttl = ttl

    def _sign(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()

    def issue(self, session: str, name: str, now: float) -> str:
        body = json.dumps({"s": session, "c": name, "e": round(now + self.ttl, 3)},
                          separators=(",", ":")).encode()
        return f"{_b64e(body)}.{_b64e(self._sign(body))}"

    def verify(self, token: str, now: float) -> TokenClaims:
        """Return the claims of a valid token; raise BadToken otherwise."""
        try:
            body_part, sig_part = token.split(".")
            body, sig = _b64d(body_part), _b64d(sig_part)
        except (ValueError, TypeError, AttributeError):
            raise BadToken("malformed token") from None
        if not hmac.compare_digest(sig, self._sign(body)):
            raise BadToken("bad token signature")
        try:
            claims = json.loads(body)
            result = TokenClaims(str(claims["s"]), str(claims["c"]), float(claims["e"]))
        except (ValueError, KeyError, TypeError):
            raise BadToken("malformed token") from None
        if result.expires <= now:
            raise BadToken("token expired")
        return result
