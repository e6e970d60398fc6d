"""Real image files for tests, written without any image library.

A PNG is a few zlib-compressed rows and three CRC'd chunks; writing them by
hand keeps the API-side tests free of decoders. ``padding`` adds a private
ancillary chunk that every decoder skips, to reach multipart sizes with an
image that still upscales in milliseconds.
"""

from __future__ import annotations

import struct
import zlib


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_bytes(
    width: int = 24, height: int = 24, color: tuple[int, int, int] = (200, 30, 60), padding: int = 0
) -> bytes:
    rows = b"".join(
        b"\x00"
        + b"".join(
            bytes((color[0], (color[1] + 7 * y) % 256, (color[2] + 5 * x) % 256))
            for x in range(width)
        )
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = _chunk(b"IHDR", header)
    if padding:
        body += _chunk(b"prVt", b"\x00" * padding)
    body += _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a size in its header (for pixel-limit checks)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IEND", b"")


def jpeg_header(width: int, height: int) -> bytes:
    """The start of a baseline JPEG: SOI, an APP0 segment, then SOF0."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof + b"\xff\xd9"
