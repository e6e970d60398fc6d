"""A real server and headless Debian Chromium for the web UI tests.

Chromium comes from Debian (scripts/install-chromium.sh), never from
``playwright install``, which downloads browser builds at run time. The tests
skip, with the reason, when /usr/bin/chromium or the playwright package is
missing.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.context import new_principal
from support.server import Server

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Multipart from 5 MiB (the smallest part S3 allows), so one test file of
#: ~6 MiB goes through parts; two engine threads for the 2-core machines.
SERVER_ENV = {
    "multipart_threshold_bytes": 5 * 1024 * 1024,
    "multipart_part_bytes": 5 * 1024 * 1024,
    "engine_threads": 2,
}
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


def _playwright() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("web UI tests need the playwright package (pip install playwright)")
    if not CHROMIUM.exists():
        pytest.skip(f"web UI tests need {CHROMIUM}: run scripts/install-chromium.sh")
    return sync_playwright


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    sync_playwright = _playwright()
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        # A persistent context is the only way to give Chromium a fresh
        # user-data dir of our own; pages are opened in it per test.
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            args=LAUNCH_ARGS,
            headless=True,
            accept_downloads=True,
            viewport=DESKTOP,
            # Generous: a first start on a busy 2-core machine can be slow.
            timeout=120_000,
        )
        yield context
        context.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    _playwright()  # no server when the browser tests cannot run
    running = Server(tmp_path_factory.mktemp("web") / "data", workers=1, **SERVER_ENV).start()
    yield running
    running.stop()


@pytest.fixture
def api_key(server: Server) -> str:
    """A fresh account (so history starts empty) with a few credits."""
    return new_principal(server.ctx, credits=25)[0]


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    tab = browser.new_page()
    tab.set_default_timeout(60_000)
    yield tab
    tab.close()


#: From now on, collect what the page says through its live region
#: (``#announcer``) in ``window.__said``; ``said(page)`` reads it back.
_LISTEN = """() => {
    window.__said = [];
    const region = document.getElementById("announcer");
    new MutationObserver(() => region.textContent && window.__said.push(region.textContent))
        .observe(region, {childList: true, characterData: true, subtree: true});
}"""


def listen(page: Any) -> None:
    page.evaluate(_LISTEN)


def said(page: Any, words: str) -> None:
    """Wait until the page has announced something containing ``words``."""
    page.wait_for_function("(words) => window.__said.some((s) => s.includes(words))", arg=words)
