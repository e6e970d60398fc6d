"""The page in headless Chromium against a real server: every step a person
takes, through the public API only."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from typing import Any

from support.images import png_bytes
from support.server import Server
from upscayl_cloud.services.imagecheck import inspect

#: The page's typography (written as escapes to keep the source ASCII).
TIMES, DASH = "\u00d7", "\u2013"
GIF = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"


def px(width: int, height: int) -> str:
    return f"{width} {TIMES} {height} px"


def sign_in(page: Any, server: Server, key: str) -> None:
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready=true]")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Upscale images").wait_for()


def test_sign_in_refuses_a_wrong_key_in_plain_words(page: Any, server: Server) -> None:
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready=true]")
    page.get_by_label("API key").fill("uc_not-a-real-key")
    page.get_by_role("button", name="Sign in").click()
    alert = page.locator("#signin-error")
    alert.wait_for()
    assert "was not accepted" in alert.inner_text()
    assert page.evaluate("sessionStorage.length") == 0


def test_upload_upscale_compare_download_and_history(
    page: Any, server: Server, api_key: str
) -> None:
    sign_in(page, server, api_key)
    assert page.locator("#credits").inner_text() == "25 credits left"
    # The key is kept for this tab only.
    assert page.evaluate("Object.values(sessionStorage)") == [api_key]

    page.set_input_files(
        "#file-input",
        files=[
            {"name": "red.png", "mimeType": "image/png", "buffer": png_bytes(24, 24)},
            {"name": "wide.png", "mimeType": "image/png", "buffer": png_bytes(32, 16)},
            {"name": "fake.png", "mimeType": "image/png", "buffer": GIF},
            {"name": "empty.png", "mimeType": "image/png", "buffer": b""},
        ],
    )
    files = page.locator("#file-list li")
    files.nth(3).wait_for()
    assert f"{px(24, 24)} \u2192 {px(96, 96)}" in files.nth(0).inner_text()
    # Refused here exactly as the server would, in the server's words.
    assert "Unsupported file type. Allowed: JPEG, PNG, WEBP" in files.nth(2).inner_text()
    assert "The file is empty" in files.nth(3).inner_text()
    page.get_by_role("button", name="Remove fake.png").click()
    page.get_by_role("button", name="Remove empty.png").click()

    page.get_by_label("Model").select_option("quick-clear-4x")
    assert "Quick Clear" in page.locator("#model-desc").inner_text()
    page.get_by_label("Format").select_option("png")
    face = page.get_by_label("Enhance faces")
    assert face.is_disabled()
    assert "no face-restoration model" in page.locator("#face-help").inner_text()
    assert "2 of 2 images ready" in page.locator("#cost").inner_text()
    page.get_by_role("button", name="Upscale", exact=True).click()

    task = page.locator("#tasks .task").first
    task.locator(".task-state", has_text="Done").wait_for(timeout=60_000)
    results = task.locator(".result")
    assert results.count() == 2
    assert px(96, 96) in results.nth(0).inner_text()
    assert px(128, 64) in results.nth(1).inner_text()
    assert "from red.png" in results.nth(0).inner_text()  # which source each came from
    page.locator("#credits", has_text="23 credits left").wait_for()

    # Before/after at the same zoom: both layers fill one stage.
    results.nth(0).get_by_role("button", name="Compare").click()
    slider = results.nth(0).get_by_role("slider")
    slider.focus()
    page.keyboard.press("End")
    assert slider.input_value() == "100"
    boxes = [
        results.nth(0).locator(f"img.compare-{side}").bounding_box() for side in ("before", "after")
    ]
    assert boxes[0] == boxes[1]
    # Zoomed, the view scrolls and is a Tab stop: it has a name.
    view = results.nth(0).get_by_role("region", name=re.compile("^Comparison of "))
    assert view.count() == 1

    with page.expect_download() as single:
        results.nth(0).get_by_role("link", name=re.compile("^Download ")).click()
    data = Path(single.value.path()).read_bytes()
    info = inspect(data)
    assert info is not None and (info.mime_type, info.width, info.height) == ("image/png", 96, 96)
    assert single.value.suggested_filename.endswith(".png")

    with page.expect_download() as archive:
        task.get_by_role("button", name="Download all 2 as ZIP").click()
    with zipfile.ZipFile(io.BytesIO(Path(archive.value.path()).read_bytes())) as zipped:
        assert zipped.testzip() is None  # every CRC matches
        names = zipped.namelist()
        assert len(names) == 2 and all(name.endswith(".png") for name in names)
        assert inspect(zipped.read(names[1])).width == 128

    page.get_by_role("link", name="History").click()
    page.get_by_role("heading", name="History").wait_for()
    entry = page.locator("#history-list > li").first
    entry.wait_for()
    assert "Completed" in entry.inner_text() and "quick-clear-4x" in entry.inner_text()
    assert entry.locator("img.thumb").count() == 2
    assert page.locator("#history-summary").inner_text() == "Showing 1 of 1 task"

    page.get_by_label("Failures").select_option("true")
    page.get_by_role("button", name="Apply").click()
    page.locator("#history-summary", has_text="No tasks match").wait_for()


def test_a_big_file_goes_up_in_parts(page: Any, server: Server, api_key: str) -> None:
    big = png_bytes(16, 16, padding=6 * 1024 * 1024)  # over the 5 MiB threshold
    sign_in(page, server, api_key)
    page.set_input_files(
        "#file-input", files=[{"name": "big.png", "mimeType": "image/png", "buffer": big}]
    )
    page.locator("#file-list li").first.wait_for()
    page.get_by_label("Model").select_option("quick-clear-4x")
    page.get_by_label(f"2{TIMES}").check()
    parts: list[str] = []
    page.on("request", lambda r: parts.append(r.url) if "partNumber=" in r.url else None)
    page.get_by_role("button", name="Upscale", exact=True).click()
    task = page.locator("#tasks .task").first
    task.locator(".task-state", has_text="Done").wait_for(timeout=60_000)
    assert len(parts) == 2
    assert px(32, 32) in task.locator(".result").first.inner_text()
