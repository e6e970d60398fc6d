"""HMAC-signed links for the local store, where the service plays S3's part.

The signature covers method, object key, expiry, content type, length limit
and (for multipart parts) upload id and part number, so a link cannot be
re-pointed at another object, verb or size. Several secrets verify, the
first signs: secrets rotate without breaking links already handed out.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass


class SignatureError(Exception):
    """The link was not signed by us or was altered."""


class LinkExpiredError(Exception):
    """The link was signed by us but its time is up."""


@dataclass(frozen=True)
class LinkClaims:
    method: str
    key: str
    expires_at_ms: int
    content_type: str = ""
    max_length: int = 0
    upload_id: str = ""
    part_number: int = 0

    def canonical(self) -> bytes:
        fields = (
            self.method.upper(),
            self.key,
            str(self.expires_at_ms),
            self.content_type,
            str(self.max_length),
            self.upload_id,
            str(self.part_number),
        )
        return "\n".join(fields).encode()


class Signer:
    def __init__(self, secrets: list[bytes]) -> None:
        if not secrets:
            raise ValueError("at least one signing secret is required")
        self._secrets = secrets

    def sign(self, claims: LinkClaims) -> str:
        return hmac.new(self._secrets[0], claims.canonical(), hashlib.sha256).hexdigest()

    def verify(self, claims: LinkClaims, signature: str, now_ms: int) -> None:
        """Raise unless ``signature`` is ours for exactly these claims and unexpired.

        The signature is checked before the expiry, so tampering with the
        expiry reads as tampering, not as an expired link.
        """
        message = claims.canonical()
        given = signature.encode()  # compare_digest refuses non-ASCII str; bytes never
        valid = False
        for secret in self._secrets:
            expected = hmac.new(secret, message, hashlib.sha256).hexdigest().encode()
            valid |= hmac.compare_digest(expected, given)
        if not valid:
            raise SignatureError("signature does not match")
        if now_ms > claims.expires_at_ms:
            raise LinkExpiredError("link expired")
