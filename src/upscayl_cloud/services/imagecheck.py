"""What an uploaded file really is, from its first bytes, without decoding it.

The API process never decodes pixels (decoders are where image exploits
live; workers do that). It only reads magic bytes and the header's width and
height, which is enough to refuse a file that lies about its type or would
decode to more pixels than allowed (a decompression bomb costs nothing here).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

#: Enough for any PNG/WebP header and for JPEGs whose SOF follows EXIF/ICC.
HEAD_BYTES = 256 * 1024

ALLOWED_TYPES = ("image/jpeg", "image/png", "image/webp")
EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}


@dataclass(frozen=True)
class HeaderInfo:
    mime_type: str
    width: int | None
    height: int | None


def sniff(head: bytes) -> str | None:
    """The MIME type announced by the magic bytes, if it is one we accept."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def _png_size(head: bytes) -> tuple[int, int] | None:
    if len(head) >= 24 and head[12:16] == b"IHDR":
        return struct.unpack(">II", head[16:24])
    return None


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 4 <= len(head):
        if head[pos] != 0xFF:
            return None
        marker = head[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", head[pos + 2 : pos + 4])
        is_sof = 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC)
        if is_sof and pos + 9 <= len(head):
            height, width = struct.unpack(">HH", head[pos + 5 : pos + 9])
            return width, height
        pos += 2 + length
    return None


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8 " and len(head) >= 30:
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(head) >= 25:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(head) >= 30:
        width = int.from_bytes(head[24:27], "little") + 1
        height = int.from_bytes(head[27:30], "little") + 1
        return width, height
    return None


def inspect(head: bytes) -> HeaderInfo | None:
    """Type and (when the header holds it) dimensions; None if not an accepted image."""
    mime = sniff(head)
    if mime is None:
        return None
    reader = {"image/png": _png_size, "image/jpeg": _jpeg_size, "image/webp": _webp_size}[mime]
    size = reader(head)
    if size is None:
        return HeaderInfo(mime, None, None)
    return HeaderInfo(mime, size[0], size[1])
