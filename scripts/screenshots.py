"""Screenshots of the web UI's main screens for docs/web.md (docs/screenshots/).

    .venv/bin/python scripts/screenshots.py [OUT_DIR]

Starts a real server on a free loopback port (as the tests do), drives the
page in Debian's headless Chromium (scripts/install-chromium.sh) and writes
desktop and phone-sized PNGs: sign-in, upload with options, progress,
result comparison, history. The sample pictures are drawn here with numpy
and pyvips, so nothing is downloaded.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyvips

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from support.context import new_principal  # noqa: E402
from support.images import png_header_only  # noqa: E402
from support.server import Server  # noqa: E402
from tests.web.conftest import CHROMIUM, DESKTOP, LAUNCH_ARGS, PHONE  # noqa: E402


def sample_png(width: int, height: int, seed: int) -> bytes:
    """A small picture with edges and gradients, where upscaling shows."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    sky = np.stack([90 + 80 * y / height, 140 + 60 * y / height, 230 - 40 * y / height], -1)
    image = sky.copy()
    for _ in range(4):  # hills
        cy, amp, freq = rng.uniform(0.5, 0.9) * height, rng.uniform(3, 9), rng.uniform(0.04, 0.12)
        hill = y > cy + amp * np.sin(x * freq + rng.uniform(0, 6))
        colour = rng.uniform([30, 90, 30], [90, 170, 80])
        image[hill] = colour[None, :] * (0.75 + 0.25 * (y[hill] / height))[:, None]
    sun = (x - width * 0.75) ** 2 + (y - height * 0.25) ** 2 < (height * 0.12) ** 2
    image[sun] = [255, 214, 90]
    pixels = np.clip(image, 0, 255).astype(np.uint8)
    return pyvips.Image.new_from_array(pixels, interpretation="srgb").pngsave_buffer()


def shoot(page: Any, out: Path, name: str) -> None:
    page.wait_for_timeout(300)  # let images decode and transitions settle
    page.screenshot(path=str(out / f"{name}.png"), full_page=True)
    print("wrote", out / f"{name}.png")


def sign_in(page: Any, url: str, key: str) -> None:
    page.goto(url + "/")
    page.wait_for_selector("body[data-ready=true]")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Upscale images").wait_for()


def choose(page: Any, files: list[tuple[str, bytes]]) -> None:
    page.set_input_files(
        "#file-input",
        files=[{"name": n, "mimeType": "image/png", "buffer": b} for n, b in files],
    )
    page.locator("#file-list li").nth(len(files) - 1).wait_for()
    page.get_by_label("Model").select_option("quick-clear-4x")
    page.get_by_label("Format").select_option("png")


def run_task(page: Any, out: Path, prefix: str) -> Any:
    page.get_by_role("button", name="Upscale", exact=True).click()
    task = page.locator("#tasks .task").first
    try:
        task.locator(".task-state", has_text="Upscaling").wait_for(timeout=20_000)
        shoot(page, out, f"{prefix}-progress")
    except Exception:  # finished before a frame could be caught
        print("note: no in-progress frame for", prefix)
    task.locator(".task-state", has_text="Done").wait_for(timeout=120_000)
    return task


def desktop(browser: Any, url: str, key: str, out: Path) -> None:
    page = browser.new_page(viewport=DESKTOP)
    page.goto(url + "/")
    page.wait_for_selector("body[data-ready=true]")
    shoot(page, out, "desktop-signin")
    sign_in(page, url, key)
    choose(
        page,
        [
            ("valley.png", sample_png(160, 100, 1)),
            ("meadow.png", sample_png(120, 90, 2)),
            ("scan.png", png_header_only(9000, 7000)),  # over the pixel limit: refused
        ],
    )
    shoot(page, out, "desktop-upload")
    page.get_by_role("button", name="Remove scan.png").click()
    task = run_task(page, out, "desktop")
    task.locator(".result").first.get_by_role("button", name="Compare").click()
    page.locator(".compare-stage img.compare-after").first.wait_for()
    task.locator("input[type=range]").first.fill("40")
    shoot(page, out, "desktop-result")
    page.get_by_role("link", name="History").click()
    page.locator("#history-list > li").first.wait_for()
    shoot(page, out, "desktop-history")
    page.close()


def phone(browser: Any, url: str, key: str, out: Path) -> None:
    page = browser.new_page(viewport=PHONE, device_scale_factor=2, is_mobile=True)
    sign_in(page, url, key)
    choose(page, [("harbour.png", sample_png(150, 100, 4))])
    shoot(page, out, "phone-upload")
    task = run_task(page, out, "phone")
    task.locator(".result").first.get_by_role("button", name="Compare").click()
    page.locator(".compare-stage img.compare-after").first.wait_for()
    page.locator(".compare").first.scroll_into_view_if_needed()
    shoot(page, out, "phone-result")
    page.get_by_role("link", name="History").click()
    page.locator("#history-list > li").first.wait_for()
    shoot(page, out, "phone-history")
    page.close()


def main() -> None:
    from playwright.sync_api import sync_playwright

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp) / "data", workers=1, engine_threads=2).start()
        try:
            key = new_principal(server.ctx, credits=100)[0]
            with sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True
                )
                try:
                    desktop(browser, server.url, key, out)
                    phone(browser, server.url, key, out)
                finally:
                    browser.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
