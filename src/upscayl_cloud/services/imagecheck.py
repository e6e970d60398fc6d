"""What an uploaded file really is, from its first bytes, without decoding it.

The API process never decodes pixels (decoders are where image exploits
live; workers do that). It only reads magic bytes and the header's width and
height, which is enough to refuse a file that lies about its type or would
decode to more pixels than allowed (a decompression bomb costs nothing here).

A file whose header holds no readable size is refused as well (``broken``):
letting it through would charge credits for a task the worker can only fail.
Everything here is a pure function of bytes; reading more of a stored object
(a JPEG whose frame header lies beyond :data:`HEAD_BYTES`) is the caller's
I/O, guided by :attr:`JpegWalk.need` and bounded by :data:`MAX_JPEG_HEADER_BYTES`.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

#: Enough for any PNG/WebP header and for most JPEGs (SOF after EXIF/ICC).
HEAD_BYTES = 256 * 1024

#: A JPEG's frame header (SOF) must start within this many bytes. Metadata
#: segments before it are at most 64 KiB each, so this allows ~128 full ones
#: (multi-segment ICC profiles, extended XMP); more is refused rather than
#: read, so a hostile file cannot make start-task read megabytes per file.
MAX_JPEG_HEADER_BYTES = 8 * 1024 * 1024
#: And at most this many markers before it: a real JPEG has a few dozen; tiny
#: hostile segments would otherwise cost one parsing step each.
MAX_JPEG_SEGMENTS = 1024

ALLOWED_TYPES = ("image/jpeg", "image/png", "image/webp")
EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}

_TRUNCATED = "is not a complete {kind} image: its header ends before its dimensions"
_NOT_FILL = re.compile(rb"[^\xff]")


@dataclass(frozen=True)
class JpegWalk:
    """Where a walk of a JPEG's marker segments stopped, and why.

    Exactly one of ``size``, ``broken``, ``refused`` and ``need`` is set.
    ``need`` means the bytes given ran out before the frame header but the
    file goes on: call :func:`walk_jpeg` again with at least ``need`` bytes
    of the file, passing ``pos`` and ``segments`` back to resume.
    """

    pos: int
    segments: int
    size: tuple[int, int] | None = None
    broken: str | None = None
    refused: str | None = None
    need: int | None = None


@dataclass(frozen=True)
class HeaderInfo:
    """A sniffed image: its type and, when the header gives it, its size.

    ``broken`` says why the header gives no size (truncated or malformed);
    ``refused`` says why reading on was refused (see the JPEG limits);
    ``pending`` is a JPEG walk that needs more bytes than were given.
    """

    mime_type: str
    width: int | None
    height: int | None
    broken: str | None = None
    refused: str | None = None
    pending: JpegWalk | None = None


def sniff(head: bytes) -> str | None:
    """The MIME type announced by the magic bytes, if it is one we accept."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def _png_size(head: bytes) -> tuple[int, int] | str:
    if len(head) < 16:
        return _TRUNCATED.format(kind="PNG")
    if head[12:16] != b"IHDR":
        return "is not a valid PNG image: its first chunk is not IHDR"
    if len(head) < 24:
        return _TRUNCATED.format(kind="PNG")
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def walk_jpeg(data: bytes, total: int, pos: int = 2, segments: int = 0) -> JpegWalk:
    """Walk the marker segments in ``data`` (the first bytes of a ``total``-byte
    file) from ``pos`` to the frame header (SOFn), which holds the size.

    Only segment headers are looked at; a segment's body is skipped by its
    length, so :attr:`JpegWalk.need` asks for the next header only.
    """

    def invalid(why: str) -> JpegWalk:
        return JpegWalk(pos, segments, broken=f"is not a valid JPEG image: {why}")

    def out_of_bytes(needed: int) -> JpegWalk:
        if needed > total:
            return JpegWalk(pos, segments, broken=_TRUNCATED.format(kind="JPEG"))
        if needed > MAX_JPEG_HEADER_BYTES:
            return JpegWalk(
                pos,
                segments,
                refused=(
                    "has its JPEG frame header (SOF) beyond the first "
                    f"{MAX_JPEG_HEADER_BYTES // (1024 * 1024)} MiB; strip the metadata "
                    "before it and upload the image again"
                ),
            )
        return JpegWalk(pos, segments, need=needed)

    while True:
        if segments >= MAX_JPEG_SEGMENTS:
            return JpegWalk(
                pos,
                segments,
                refused=(
                    f"has more than {MAX_JPEG_SEGMENTS} JPEG segments before its frame "
                    "header (SOF); strip the metadata and upload the image again"
                ),
            )
        if pos + 2 > len(data):
            return out_of_bytes(pos + 2)
        if data[pos] != 0xFF:
            return invalid(f"no segment marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill bytes: skip the whole run at once
            found = _NOT_FILL.search(data, pos + 1)
            pos = (found.start() if found is not None else len(data)) - 1
            continue
        segments += 1
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            pos += 2
            continue
        if marker in (0xD9, 0xDA):
            where = "its end" if marker == 0xD9 else "its image data"
            return invalid(f"it has no frame header (SOF) before {where}")
        if pos + 4 > len(data):
            return out_of_bytes(pos + 4)
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2:
            return invalid(f"a segment length of {length} at byte {pos}")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if length < 8:
                return invalid(f"a frame header of {length} bytes")
            if pos + 9 > len(data):
                return out_of_bytes(pos + 9)
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return JpegWalk(pos, segments, size=(width, height))
        pos += 2 + length


def _webp_size(head: bytes) -> tuple[int, int] | str:
    chunk = head[12:16]
    needed = {b"VP8 ": 30, b"VP8L": 25, b"VP8X": 30}.get(chunk)
    if len(head) < 16:
        return _TRUNCATED.format(kind="WebP")
    if needed is None:
        return f"is not a valid WebP image: its first chunk is {chunk!r}, not VP8, VP8L or VP8X"
    if len(head) < needed:
        return _TRUNCATED.format(kind="WebP")
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    width = int.from_bytes(head[24:27], "little") + 1
    height = int.from_bytes(head[27:30], "little") + 1
    return width, height


def jpeg_info(walk: JpegWalk) -> HeaderInfo:
    """A JPEG's :class:`HeaderInfo` from where its walk stopped."""
    if walk.size is not None:
        return HeaderInfo("image/jpeg", walk.size[0], walk.size[1])
    pending = walk if walk.need is not None else None
    return HeaderInfo("image/jpeg", None, None, walk.broken, walk.refused, pending)


def inspect(head: bytes, total: int | None = None) -> HeaderInfo | None:
    """Type and dimensions from the first bytes of a ``total``-byte file (None:
    ``head`` is the whole file); None if it is not an accepted image.

    PNG and WebP sizes sit within their first 30 bytes; a JPEG's may lie
    beyond ``head``, in which case the info is ``pending`` (see :func:`walk_jpeg`).
    """
    mime = sniff(head)
    if mime is None:
        return None
    if mime == "image/jpeg":
        return jpeg_info(walk_jpeg(head, len(head) if total is None else total))
    size = (_png_size if mime == "image/png" else _webp_size)(head)
    if isinstance(size, str):
        return HeaderInfo(mime, None, None, broken=size)
    return HeaderInfo(mime, size[0], size[1])
