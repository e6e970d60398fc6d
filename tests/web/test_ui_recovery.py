"""What a person meets when things go other than planned: a task refused for
want of credits, a page reloaded mid-task, a sign-out on a shared computer,
a server that stops answering, a file removed while uploads run. A server
without workers keeps tasks queued for as long as a test needs them to run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from support.client import ApiClient
from support.context import new_principal
from support.images import png_bytes
from support.server import Server
from tests.web.conftest import PHONE, SERVER_ENV
from tests.web.test_ui_batches import choose, sign_in
from upscayl_cloud.services import keys


@pytest.fixture(scope="module")
def queued(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose tasks wait in the queue (``server`` first: it skips
    when Chromium is missing)."""
    running = Server(tmp_path_factory.mktemp("queued") / "data", workers=0, **SERVER_ENV).start()
    yield running
    running.stop()


def _upload_urls(page: Any) -> list[str]:
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "get-upload-url" in r.url else None)
    return asked


def test_a_task_refused_for_credits_keeps_its_files_and_their_uploads(
    page: Any, queued: Server
) -> None:
    """The page saw two credits; another program spent them meanwhile. The
    402 keeps the files listed with the server's words, and once credits are
    added the next press starts the task without uploading them again."""
    key = new_principal(queued.ctx, credits=2)[0]
    asked = _upload_urls(page)
    sign_in(page, queued, key)
    choose(page, {"a.png": png_bytes(8, 8), "b.png": png_bytes(9, 8)})
    spent = ApiClient(queued.url, key).start_direct("x.png", png_bytes(8, 8))
    assert spent.status_code == 200, spent.text  # one credit left, two needed
    page.get_by_role("button", name="Upscale", exact=True).click()
    problems = page.locator("#file-list li .file-problem")
    problems.nth(1).wait_for()
    assert problems.nth(0).inner_text().startswith("Not started: Not enough credits")
    assert "2 needed, 1 left" in problems.nth(0).inner_text()
    assert len(asked) == 2

    keys.add_credits(queued.ctx, key, 5)
    page.get_by_role("button", name="Upscale", exact=True).click()
    page.locator("#tasks .task[data-task-id]").wait_for()
    assert page.locator("#file-list li").count() == 0
    assert len(asked) == 2  # the same uploads, not sent again


def test_a_reloaded_page_watches_its_tasks_again_and_sign_out_clears_them(
    page: Any, queued: Server
) -> None:
    key = new_principal(queued.ctx, credits=5)[0]
    sign_in(page, queued, key)
    choose(page, {"a.png": png_bytes(8, 8)})
    page.get_by_role("button", name="Upscale", exact=True).click()
    card = page.locator("#tasks .task[data-task-id]")
    card.wait_for()
    task_id = card.get_attribute("data-task-id")
    # The Upscale button went disabled under the focus: it went to the card.
    assert page.evaluate("document.activeElement.closest('.task') !== null")

    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    resumed = page.locator(f'#tasks .task[data-task-id="{task_id}"]')
    resumed.locator(".task-state", has_text="Waiting in the queue").wait_for()

    page.get_by_role("button", name="Sign out").click()
    assert page.locator("#tasks .task").count() == 0
    other = new_principal(queued.ctx, credits=5)[0]
    page.get_by_label("API key").fill(other)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Upscale images").wait_for()
    assert page.locator("#tasks .task").count() == 0  # nothing of the first key's work


def test_a_server_out_of_reach_is_said_so_with_a_countdown(page: Any, queued: Server) -> None:
    key = new_principal(queued.ctx, credits=5)[0]
    sign_in(page, queued, key)
    choose(page, {"a.png": png_bytes(8, 8)})
    page.get_by_role("button", name="Upscale", exact=True).click()
    state = page.locator("#tasks .task .task-state")
    state.filter(has_text="Waiting in the queue").wait_for()
    page.route("**/get-task-status", lambda route: route.abort())
    state.filter(has_text="The server cannot be reached; trying again in").wait_for(timeout=30_000)
    first = state.inner_text()
    page.wait_for_timeout(2_100)
    assert state.inner_text() != first  # counting down, not frozen
    assert "hourly request limit" not in state.inner_text()


def test_files_cannot_be_removed_while_they_upload(page: Any, queued: Server) -> None:
    """Removing a file on its way up did not stop it being sent and charged."""
    key = new_principal(queued.ctx, credits=5)[0]
    sign_in(page, queued, key)
    choose(page, {"a.png": png_bytes(8, 8), "b.png": png_bytes(9, 8)})
    held: list[Any] = []
    released: list[bool] = []

    def hold(route: Any) -> None:  # the PUTs wait until let go
        if released:
            route.continue_()
        else:
            held.append(route)

    page.route("**/objects/**", hold)
    page.get_by_role("button", name="Upscale", exact=True).click()
    while not held:
        page.wait_for_timeout(50)
    assert page.get_by_role("button", name="Remove a.png").is_disabled()
    assert page.get_by_role("button", name="Sign out").is_disabled()
    released.append(True)
    for route in held:
        route.continue_()
    page.locator("#tasks .task[data-task-id]").wait_for()
    assert page.get_by_role("button", name="Sign out").is_enabled()


def test_on_a_phone_controls_are_big_enough_and_zoom_opens_on_the_divider(
    page: Any, server: Server
) -> None:
    """At 390 px: the nav links, Sign out and Remove are 40 px tall like the
    rest; a comparison zoomed to 200 % shows the divider, not the left edge
    (only the original); the original's alt text names the original."""
    page.set_viewport_size(PHONE)
    key = new_principal(server.ctx, credits=5)[0]
    sign_in(page, server, key)
    choose(page, {"wide.png": png_bytes(120, 40)})
    small = page.evaluate(
        """() => [...document.querySelectorAll('#nav a, #sign-out, #file-list button')]
            .filter((el) => el.getBoundingClientRect().height < 40).map((el) => el.textContent)"""
    )
    assert small == []
    page.get_by_role("button", name="Upscale", exact=True).click()
    card = page.locator("#tasks .task").first
    card.locator(".task-state", has_text="Done").wait_for(timeout=60_000)
    card.get_by_role("button", name="Compare").click()
    assert card.locator("img.compare-before").get_attribute("alt") == "Original: wide.png"
    card.get_by_label("Zoom").select_option("2")
    shown = page.evaluate(
        """() => {
            const view = document.querySelector('.compare-viewport');
            const line = document.querySelector('.compare-divider').getBoundingClientRect();
            const box = view.getBoundingClientRect();
            return view.scrollLeft > 0 && line.left >= box.left && line.right <= box.right;
        }"""
    )
    assert shown
