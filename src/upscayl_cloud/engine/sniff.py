"""What kind of file a client sent, from its first bytes alone.

The type is decided by magic bytes, never by the file name or the declared
content type: both come from the client and cost nothing to fake, while the
bytes are what a decoder will actually parse. Only JPEG, PNG and WebP are
accepted (the formats Upscayl Cloud documents). Other image kinds are
recognised too, only so that a GIF or a TIFF gets "unsupported type" rather
than the vaguer "not an image"; libvips could read several of them, but every
extra decoder is extra attack surface for untrusted bytes.

This module imports no image library, so the service can call it on an upload
without loading libvips into the API process.
"""

from __future__ import annotations

#: How many leading bytes to pass to the checks below: binary signatures need
#: 12, the rest leaves room for an XML prolog before an ``<svg`` tag.
HEAD_BYTES = 512

JPEG = "image/jpeg"
PNG = "image/png"
WEBP = "image/webp"
SUPPORTED_TYPES: tuple[str, ...] = (JPEG, PNG, WEBP)

# Names clients use for the same types; "image/jpg" is common though unregistered.
_ALIASES = {"image/jpg": JPEG, "image/pjpeg": JPEG, "image/x-png": PNG}

# Image kinds we refuse. Prefix -> human name for the error message.
_OTHER_IMAGE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "BigTIFF"),
    (b"MM\x00+", "BigTIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "PSD"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"qoif", "QOI"),
    (b"v/1\x01", "OpenEXR"),
    (b"%PDF-", "PDF"),
    (b"SIMPLE  =", "FITS"),
)

_BMP_DIB_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})

# ISO base media file brands (HEIF, AVIF): "ftyp" at offset 4, brand after it.
_FTYP_BRANDS = {
    b"heic": "HEIC",
    b"heix": "HEIC",
    b"mif1": "HEIF",
    b"msf1": "HEIF",
    b"avif": "AVIF",
    b"avis": "AVIF",
}


def sniff_mime_type(head: bytes) -> str | None:
    """The accepted type whose signature ``head`` starts with, or None.

    Needs at least :data:`HEAD_BYTES` bytes of the file (fewer only when the
    file is shorter)."""
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    return None


def other_image_kind(head: bytes) -> str | None:
    """The name of a recognised image format that we do not accept, or None.

    SVG is detected loosely (an ``<svg`` tag near the start) since it is text;
    a false positive only changes which 4xx the client sees."""
    for magic, name in _OTHER_IMAGE_MAGIC:
        if head.startswith(magic):
            return name
    # "BM" alone would catch text; the DIB header's size field pins it down.
    if head[:2] == b"BM" and int.from_bytes(head[14:18], "little") in _BMP_DIB_SIZES:
        return "BMP"
    if head[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(head[8:12], "ISO media (HEIF/AVIF/video)")
    if b"<svg" in head.lower():
        return "SVG"
    return None


def normalize_mime_type(declared: str) -> str:
    """``"Image/JPG; charset=x"`` -> ``"image/jpeg"``: compare types, not spellings."""
    base = declared.split(";", 1)[0].strip().lower()
    return _ALIASES.get(base, base)
