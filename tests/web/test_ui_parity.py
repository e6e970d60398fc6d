"""The page refuses exactly what the server refuses: its header reader and
limit checks (web/static/js/inspect.js) against services/imagecheck.py and a
real start-task, run in the browser on the same bytes."""

from __future__ import annotations

from typing import Any

import pytest
import pyvips

from support.client import ApiClient, file_entry
from support.context import new_principal
from support.images import jpeg_header, png_bytes, png_header_only
from support.server import Server
from upscayl_cloud.services.imagecheck import inspect

_INSPECT = """async ([bytes]) => {
    const m = await import("/web/js/inspect.js");
    return m.inspectFile(new File([new Uint8Array(bytes)], "x"));
}"""
_REFUSAL = """async ([bytes, limits, scale, format]) => {
    const m = await import("/web/js/inspect.js");
    const file = new File([new Uint8Array(bytes)], "x");
    return m.refusal(await m.inspectFile(file), file, limits, scale, format);
}"""


def _vips(width: int, height: int, bands: int = 3) -> pyvips.Image:
    return pyvips.Image.black(width, height, bands=bands).cast("uchar") + 90


SAMPLES = {
    "png": lambda: png_bytes(37, 21),
    "jpeg": lambda: _vips(45, 30).jpegsave_buffer(Q=80),
    "jpeg-header": lambda: jpeg_header(5000, 4000),
    "webp-lossy": lambda: _vips(33, 17).webpsave_buffer(Q=70),
    "webp-lossless": lambda: _vips(33, 17).webpsave_buffer(lossless=True),
    "webp-alpha": lambda: _vips(29, 31, bands=4).webpsave_buffer(Q=70),
    "gif": lambda: b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
}


@pytest.fixture
def blank(page: Any, server: Server) -> Any:
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready=true]")
    return page


@pytest.mark.parametrize("kind", list(SAMPLES))
def test_header_reader_matches_the_server(blank: Any, kind: str) -> None:
    data = SAMPLES[kind]()
    seen = blank.evaluate(_INSPECT, [list(data)])
    expected = inspect(data)
    if expected is None:
        assert seen["type"] is None
    else:
        assert (seen["type"], seen["width"], seen["height"]) == (
            expected.mime_type,
            expected.width,
            expected.height,
        )


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
    ours = blank.evaluate(_REFUSAL, [list(data), limits, int(scale), fmt])
    assert ours
    link = api.upload("big.png", data)
    refused = api.start([file_entry(link)], model="quick-clear-4x", scale=scale, saveImageAs=fmt)
    assert refused.status_code == 400
    assert ours in refused.json()["message"]
