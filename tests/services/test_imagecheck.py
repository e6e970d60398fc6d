"""The header parser on real bytes: sizes, truncated and malformed headers,
and the JPEG walk that resumes past the first bytes within its limits."""

from __future__ import annotations

import struct

import pytest
import pyvips

from support.images import jpeg_header, png_bytes
from upscayl_cloud.services.imagecheck import (
    MAX_JPEG_HEADER_BYTES,
    MAX_JPEG_SEGMENTS,
    inspect,
    jpeg_info,
    sniff,
    walk_jpeg,
)


def _app15(count: int, body: int = 65533) -> bytes:
    """``count`` APP15 segments (a marker every decoder skips) of ``body`` bytes each."""
    return (b"\xff\xef" + struct.pack(">H", body + 2) + b"\x00" * body) * count


def _real_jpeg(width: int = 16, height: int = 16) -> bytes:
    image = pyvips.Image.black(width, height, bands=3).cast("uchar") + 90
    return bytes(image.jpegsave_buffer(Q=80))


def test_sniff_by_magic_bytes_only() -> None:
    assert sniff(png_bytes(4, 4)) == "image/png"
    assert sniff(jpeg_header(4, 4)) == "image/jpeg"
    assert sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff(b"GIF89a....") is None
    assert sniff(b"") is None


def test_dimensions_from_headers() -> None:
    assert (inspect(png_bytes(30, 20)).width, inspect(png_bytes(30, 20)).height) == (30, 20)
    info = inspect(jpeg_header(6000, 4000))
    assert (info.width, info.height) == (6000, 4000)
    real = inspect(_real_jpeg(45, 30))
    assert (real.width, real.height, real.broken) == (45, 30, None)
    lossless = bytes(
        (pyvips.Image.black(33, 17, bands=3) + 9).cast("uchar").webpsave_buffer(lossless=True)
    )
    assert (inspect(lossless).width, inspect(lossless).height) == (33, 17)
    assert inspect(b"not an image") is None


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (png_bytes()[:8], "not a complete PNG image: its header ends before its dimensions"),
        (png_bytes()[:20], "not a complete PNG image"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "not a complete JPEG image"),
        (b"\xff\xd8\xff\xe0\x00", "not a complete JPEG image"),
        (b"RIFF\x00\x00\x00\x00WEBP", "not a complete WebP image"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8L\x00\x00", "not a complete WebP image"),
    ],
)
def test_truncated_headers_are_broken(data: bytes, text: str) -> None:
    info = inspect(data)
    assert info is not None and info.width is None and info.pending is None
    assert info.broken is not None and text in info.broken


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 4 + b"IDAT" + b"\x00" * 12, "first chunk is not IHDR"),
        (b"RIFF\x00\x00\x00\x00WEBPJUNK" + b"\x00" * 20, "not VP8, VP8L or VP8X"),
        (b"\xff\xd8" + _app15(1, 10) + b"\xff\xd9", "no frame header (SOF) before its end"),
        (b"\xff\xd8\xff\xda\x00\x08" + b"\x00" * 20, "before its image data"),
        (b"\xff\xd8\xff\xe0\x00\x10" + b"\x00" * 14 + b"\x12\x34", "no segment marker at byte 20"),
        (b"\xff\xd8\xff\xe1\x00\x01" + b"\x00" * 20, "segment length of 1"),
    ],
)
def test_malformed_headers_are_broken(data: bytes, text: str) -> None:
    info = inspect(data)
    assert info is not None and info.broken is not None and text in info.broken


def test_fill_bytes_before_a_marker_are_skipped() -> None:
    real = _real_jpeg(20, 10)
    padded = real[:2] + b"\xff" * 5000 + real[2:]
    assert (inspect(padded).width, inspect(padded).height) == (20, 10)


def test_a_jpeg_walk_resumes_past_the_bytes_it_was_given() -> None:
    real = _real_jpeg(16, 16)
    data = real[:2] + _app15(5) + real[2:]
    info = inspect(data[:1000], len(data))
    assert info is not None and info.width is None and info.broken is None
    walk = info.pending
    # It asks for the next segment header only, not the segment bodies.
    assert walk is not None and walk.need == 2 + (2 + 65535) + 2
    while walk.need is not None:
        walk = walk_jpeg(data[: walk.need], len(data), walk.pos, walk.segments)
    assert jpeg_info(walk).width == 16


def test_a_walk_that_runs_off_the_file_is_broken() -> None:
    data = b"\xff\xd8" + _app15(3)
    info = inspect(data[:100], len(data))
    walk = info.pending
    while walk.need is not None:
        walk = walk_jpeg(data[: walk.need], len(data), walk.pos, walk.segments)
    assert walk.broken is not None and "not a complete JPEG image" in walk.broken


def test_the_walk_stops_at_its_limits() -> None:
    far = walk_jpeg(b"\xff\xd8", MAX_JPEG_HEADER_BYTES * 2, pos=MAX_JPEG_HEADER_BYTES)
    assert far.need is None and far.refused is not None and "beyond the first 8 MiB" in far.refused
    tiny = b"\xff\xd8" + b"\xff\xfe\x00\x02" * (MAX_JPEG_SEGMENTS + 1) + jpeg_header(4, 4)[2:]
    many = inspect(tiny)
    assert many.width is None and many.refused is not None
    assert f"more than {MAX_JPEG_SEGMENTS} JPEG segments" in many.refused
