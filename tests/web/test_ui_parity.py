"""The page refuses exactly what the server refuses: its header reader and
limit checks (web/static/js/inspect.js) against services/imagecheck.py and a
real start-task, run in the browser on the same bytes."""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest
import pyvips

from support.client import ApiClient, file_entry
from support.context import new_principal
from support.images import jpeg_header, png_bytes, png_header_only
from support.server import Server
from upscayl_cloud.services.imagecheck import (
    EXTENSIONS,
    MAX_JPEG_HEADER_BYTES,
    HeaderInfo,
    inspect,
    jpeg_info,
    sniff,
    walk_jpeg,
)

_FILE = "const file = new File([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], 'x');"
_INSPECT = f"""async ([b64]) => {{
    const m = await import("/web/js/inspect.js");
    {_FILE}
    return m.inspectFile(file);
}}"""
_REFUSAL = f"""async ([b64, limits, scale, format]) => {{
    const m = await import("/web/js/inspect.js");
    {_FILE}
    return m.refusal(await m.inspectFile(file), file, limits, scale, format);
}}"""
#: A JPEG behind ``count`` copies of ``segment``, then ``padding`` zero bytes,
#: and how many bytes inspectFile read of it (every read is a Blob's arrayBuffer).
_INSPECT_LARGE = """async ([b64, segment, count, padding]) => {
    const m = await import("/web/js/inspect.js");
    const bytes = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
    const jpeg = bytes(b64);
    const parts = [jpeg.subarray(0, 2), ...Array(count).fill(bytes(segment)), jpeg.subarray(2)];
    const mib = new Uint8Array(1024 * 1024);
    const zeros = Array(Math.floor(padding / mib.length)).fill(mib);
    zeros.push(mib.subarray(0, padding % mib.length));
    const file = new File([...parts, ...zeros], "x");
    const arrayBuffer = Blob.prototype.arrayBuffer;
    let read = 0;
    Blob.prototype.arrayBuffer = function () {
        read += this.size;
        return arrayBuffer.call(this);
    };
    try {
        return { info: await m.inspectFile(file), read, size: file.size };
    } finally {
        Blob.prototype.arrayBuffer = arrayBuffer;
    }
}"""

#: A full APP15 segment (~64 KiB), which every decoder skips.
_APP15 = b"\xff\xef" + struct.pack(">H", 65535) + b"\x00" * 65533
#: The smallest segment: an empty comment.
_COM = b"\xff\xfe\x00\x02"


def _vips(width: int, height: int, bands: int = 3) -> pyvips.Image:
    return pyvips.Image.black(width, height, bands=bands).cast("uchar") + 90


def _jpeg() -> bytes:
    return bytes(_vips(45, 30).jpegsave_buffer(Q=80))


def _deep_jpeg(metadata: int) -> bytes:
    """A real JPEG whose frame header (SOF) lies behind ``metadata`` APP15 segments."""
    data = _jpeg()
    return data[:2] + _APP15 * metadata + data[2:]


def _cut_before_sof() -> bytes:
    data = _jpeg()
    return data[: data.index(b"\xff\xc0")]


def _sos_before_sof() -> bytes:
    sos = b"\xff\xda" + struct.pack(">H", 8) + b"\x01\x01\x00\x00\x3f\x00"
    return b"\xff\xd8" + sos + jpeg_header(45, 30)[2:]


def _png_first_chunk(kind: bytes) -> bytes:
    data = png_bytes(37, 21)
    return data[:12] + kind + data[16:]


SAMPLES = {
    "png": lambda: png_bytes(37, 21),
    "jpeg": _jpeg,
    "jpeg-header": lambda: jpeg_header(5000, 4000),
    "webp-lossy": lambda: _vips(33, 17).webpsave_buffer(Q=70),
    "webp-lossless": lambda: _vips(33, 17).webpsave_buffer(lossless=True),
    "webp-alpha": lambda: _vips(29, 31, bands=4).webpsave_buffer(Q=70),
    "gif": lambda: b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
    # Past the first 256 KiB read: the page reads on, as start-task does.
    "jpeg-sof-past-256k": lambda: _deep_jpeg(5),
    # Headers that give no size: refused by start-task (see REFUSED).
    "png-signature-only": lambda: png_bytes()[:8],
    "png-cut-in-ihdr": lambda: png_bytes()[:20],
    "png-first-chunk-not-ihdr": lambda: _png_first_chunk(b"IDAT"),
    "webp-12-bytes": lambda: b"RIFF\x04\x00\x00\x00WEBP",
    "webp-unknown-chunk": lambda: b"RIFF\x20\x00\x00\x00WEBPVP9 " + b"\x00" * 20,
    "webp-unprintable-chunk": lambda: b"RIFF\x20\x00\x00\x00WEBP'\x00\\\xff" + b"\x00" * 20,
    "jpeg-cut-before-sof": _cut_before_sof,
    "jpeg-sos-before-sof": _sos_before_sof,
    "jpeg-1100-segments": lambda: b"\xff\xd8" + _COM * 1100 + jpeg_header(45, 30)[2:],
    "jpeg-fill-bytes": lambda: b"\xff\xd8" + b"\xff" * 1000 + jpeg_header(45, 30)[2:],
    "jpeg-fill-bytes-to-the-end": lambda: b"\xff\xd8" + b"\xff" * 1000,
    "jpeg-segment-length-1": lambda: b"\xff\xd8\xff\xe0\x00\x01" + b"\x00" * 20,
    "jpeg-sof-of-7-bytes": lambda: b"\xff\xd8\xff\xc0\x00\x07" + b"\x00" * 20,
    "jpeg-no-marker": lambda: b"\xff\xd8\xff\xe0\x00\x04\x00\x00\x12\x34" + b"\x00" * 20,
    "jpeg-0x0": lambda: jpeg_header(0, 0),
}
#: The samples start-task refuses with 400 for their header alone.
REFUSED = [
    "png-signature-only",
    "png-cut-in-ihdr",
    "png-first-chunk-not-ihdr",
    "webp-12-bytes",
    "webp-unknown-chunk",
    "webp-unprintable-chunk",
    "jpeg-cut-before-sof",
    "jpeg-sos-before-sof",
    "jpeg-1100-segments",
    "jpeg-fill-bytes-to-the-end",
    "jpeg-segment-length-1",
    "jpeg-sof-of-7-bytes",
    "jpeg-no-marker",
    "jpeg-0x0",
]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _servers_view(data: bytes) -> HeaderInfo | None:
    """What start-task makes of the whole file: a JPEG's walk over all of it
    (start-task reads on past its first bytes, see tasks.read_header)."""
    if sniff(data) == "image/jpeg":
        return jpeg_info(walk_jpeg(data, len(data)))
    return inspect(data)


@pytest.fixture
def blank(page: Any, server: Server) -> Any:
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready=true]")
    return page


@pytest.mark.parametrize("kind", list(SAMPLES))
def test_header_reader_matches_the_server(blank: Any, kind: str) -> None:
    data = bytes(SAMPLES[kind]())
    seen = blank.evaluate(_INSPECT, [_b64(data)])
    expected = _servers_view(data)
    if expected is None:
        assert seen["type"] is None
    else:
        assert expected.pending is None
        assert (seen["type"], seen["width"], seen["height"]) == (
            expected.mime_type,
            expected.width,
            expected.height,
        )
        assert (seen.get("broken"), seen.get("refused")) == (expected.broken, expected.refused)
    assert (kind in REFUSED) == (
        expected is not None and (expected.width is None or expected.width * expected.height == 0)
    )


@pytest.mark.parametrize("kind", REFUSED)
def test_headers_without_a_size_are_refused_in_the_servers_words(
    blank: Any, server: Server, kind: str
) -> None:
    data = bytes(SAMPLES[kind]())
    mime = sniff(data)
    assert mime is not None
    api = ApiClient(server.url, new_principal(server.ctx, credits=5)[0])
    limits = api.http.get("/capabilities").json()["data"]["limits"]
    ours = blank.evaluate(_REFUSAL, [_b64(data), limits, 2, "png"])
    assert ours
    name = f"x.{EXTENSIONS[mime]}"
    link = api.upload(name, data, mime)
    refused = api.start([file_entry(link)], model="quick-clear-4x", scale="2", saveImageAs="png")
    assert refused.status_code == 400
    message = refused.json()["message"]
    # The page's words are the server's reason, after the file's name.
    assert message.startswith(f"File {name!r} ({link['fileName']!r})")
    assert message.endswith(ours)


def test_a_jpeg_frame_header_past_8_mib_is_refused_without_reading_the_file_whole(
    blank: Any,
) -> None:
    """A 100 MB file whose SOF lies past 8 MiB: refused in the server's words
    (the walk over the first 8 MiB, as start-task reads), after at most 8 MiB read."""
    count = MAX_JPEG_HEADER_BYTES // len(_APP15) + 1
    jpeg = _jpeg()
    padding = 100 * 1000 * 1000 - len(jpeg) - count * len(_APP15)
    seen = blank.evaluate(_INSPECT_LARGE, [_b64(jpeg), _b64(_APP15), count, padding])
    assert seen["size"] == 100 * 1000 * 1000
    head = jpeg[:2] + _APP15 * count + jpeg[2:]
    expected = jpeg_info(walk_jpeg(head[:MAX_JPEG_HEADER_BYTES], seen["size"]))
    assert expected.refused is not None and "8 MiB" in expected.refused
    info = seen["info"]
    assert (info["type"], info["width"], info["height"]) == ("image/jpeg", None, None)
    assert (info.get("broken"), info.get("refused")) == (None, expected.refused)
    assert seen["read"] <= MAX_JPEG_HEADER_BYTES


@pytest.mark.parametrize(
    ("data", "scale", "fmt"),
    [
        (png_header_only(9000, 7000), "2", "png"),  # source pixels
        (png_header_only(2100, 10), "8", "webp"),  # WebP's longest edge
        (png_header_only(6000, 6000), "8", "png"),  # output pixels
    ],
)
def test_refusals_carry_the_servers_words(
    blank: Any, server: Server, data: bytes, scale: str, fmt: str
) -> None:
    api = ApiClient(server.url, new_principal(server.ctx, credits=5)[0])
    limits = api.http.get("/capabilities").json()["data"]["limits"]
    ours = blank.evaluate(_REFUSAL, [_b64(data), limits, int(scale), fmt])
    assert ours
    link = api.upload("big.png", data)
    refused = api.start([file_entry(link)], model="quick-clear-4x", scale=scale, saveImageAs=fmt)
    assert refused.status_code == 400
    assert ours in refused.json()["message"]
