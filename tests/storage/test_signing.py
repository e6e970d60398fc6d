from __future__ import annotations

import pytest

from upscayl_cloud.storage.signing import LinkClaims, LinkExpiredError, SignatureError, Signer

CLAIMS = LinkClaims("PUT", "uploads/a/x.png", 2_000, "image/png", 100)


def test_valid_signature_passes() -> None:
    signer = Signer([b"k1"])
    signer.verify(CLAIMS, signer.sign(CLAIMS), now_ms=1_000)


@pytest.mark.parametrize(
    "changed",
    [
        LinkClaims("GET", "uploads/a/x.png", 2_000, "image/png", 100),
        LinkClaims("PUT", "uploads/b/x.png", 2_000, "image/png", 100),
        LinkClaims("PUT", "uploads/a/x.png", 9_000, "image/png", 100),
        LinkClaims("PUT", "uploads/a/x.png", 2_000, "image/jpeg", 100),
        LinkClaims("PUT", "uploads/a/x.png", 2_000, "image/png", 101),
        LinkClaims("PUT", "uploads/a/x.png", 2_000, "image/png", 100, "u", 1),
    ],
)
def test_any_change_breaks_the_signature(changed: LinkClaims) -> None:
    signer = Signer([b"k1"])
    with pytest.raises(SignatureError):
        signer.verify(changed, signer.sign(CLAIMS), now_ms=1_000)


@pytest.mark.parametrize("signature", ["", "é" * 64, "\x00", "g" * 64])
def test_malformed_signatures_are_refused_as_not_matching(signature: str) -> None:
    """Anything a client puts in the query is just a wrong signature (a
    non-ASCII one made ``compare_digest`` raise TypeError: a 500)."""
    with pytest.raises(SignatureError):
        Signer([b"k1"]).verify(CLAIMS, signature, now_ms=1_000)


def test_expiry_is_checked_after_the_signature() -> None:
    signer = Signer([b"k1"])
    with pytest.raises(LinkExpiredError):
        signer.verify(CLAIMS, signer.sign(CLAIMS), now_ms=2_001)


def test_rotation_old_secret_still_verifies() -> None:
    old = Signer([b"old"])
    rotated = Signer([b"new", b"old"])
    rotated.verify(CLAIMS, old.sign(CLAIMS), now_ms=1_000)
    with pytest.raises(SignatureError):
        Signer([b"new"]).verify(CLAIMS, old.sign(CLAIMS), now_ms=1_000)
