from __future__ import annotations

from support.images import jpeg_header, png_bytes
from upscayl_cloud.services.imagecheck import inspect, sniff


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
    assert inspect(b"not an image") is None


def test_truncated_header_gives_type_without_size() -> None:
    info = inspect(b"\xff\xd8\xff\xe0\x00")
    assert info is not None and info.mime_type == "image/jpeg" and info.width is None
