"""The page's other paths: keyboard-only sign-in, a refusal in plain words,
and history paging, against the same real server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from support.client import ApiClient
from support.context import new_principal
from support.images import png_bytes
from support.server import Server
from tests.web.conftest import SERVER_ENV, listen, said
from tests.web.test_ui_batches import sign_in as sign_in_with

DASH = "\u2013"

_DROP = """([names, contents]) => {
    const transfer = new DataTransfer();
    names.forEach((name, i) =>
        transfer.items.add(new File([new Uint8Array(contents[i])], name, {type: "image/png"})));
    document.getElementById("drop").dispatchEvent(
        new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
}"""


def drop_files(page: Any, files: dict[str, bytes]) -> None:
    """Drop files on the drop zone, as a drag from the desktop does."""
    page.evaluate(_DROP, [list(files), [list(data) for data in files.values()]])


def sign_in(page: Any, server: Server, credits: int) -> None:
    """Sign in with a new key holding ``credits``, as a user types it."""
    key = new_principal(server.ctx, credits=credits)[0]
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready=true]")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    left = f"{credits} credit{'' if credits == 1 else 's'} left"
    page.locator("#credits", has_text=left).wait_for()


def test_keyboard_only_sign_in_lands_on_the_upscale_view(
    page: Any, server: Server, api_key: str
) -> None:
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready=true]")
    page.keyboard.press("Tab")  # the skip link comes first
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "api-key"
    page.keyboard.type(api_key)
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Upscale images").wait_for()
    assert page.evaluate("document.activeElement.id") == "upscale-title"
    # The file picker is a real input, reachable from the keyboard.
    focused = []
    for _ in range(12):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.id"))
    assert "file-input" in focused
    assert focused.index("file-input") < focused.index("model")
    # The hidden input's focus shows on its button alone, not on the help line.
    for _ in range(12):
        page.keyboard.press("Shift+Tab")
        if page.evaluate("document.activeElement.id") == "file-input":
            break
    assert page.evaluate("document.activeElement.id") == "file-input"
    outlines = page.evaluate(
        """[".drop .button", "#drop-help"].map(
             (s) => getComputedStyle(document.querySelector(s)).outlineStyle)"""
    )
    assert outlines == ["solid", "none"]


def test_files_that_cost_more_than_the_credits_left_are_not_uploaded(
    page: Any, server: Server
) -> None:
    """The page knows the balance: two images on one credit are refused
    before any upload (start-task's 402 came only after every file was up)."""
    uploads: list[str] = []
    page.on("request", lambda r: uploads.append(r.url) if "get-upload-url" in r.url else None)
    sign_in(page, server, credits=1)
    drop_files(page, {"a.png": png_bytes(8, 8), "b.png": png_bytes(8, 8)})
    page.locator("#file-list li").nth(1).wait_for()
    cost = page.locator("#cost")
    assert "needs 2 credits, but 1 left" in cost.inner_text()
    assert page.get_by_role("button", name="Upscale", exact=True).is_disabled()
    page.get_by_role("button", name="Remove b.png").click()
    assert "uses 1 credit" in cost.inner_text()
    assert page.get_by_role("button", name="Upscale", exact=True).is_enabled()
    assert uploads == []


def test_history_pages_through_older_tasks(page: Any, server: Server) -> None:
    key = new_principal(server.ctx, credits=20)[0]
    api = ApiClient(server.url, key)
    for n in range(11):  # one more than a page; queued tasks are listed too
        started = api.start_direct(f"t{n}.png", png_bytes(8, 8), model="quick-clear-4x", scale="2")
        assert started.status_code == 200, started.text
    page.goto(server.url + "/#/history")
    page.wait_for_selector("body[data-ready=true]")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="History").click()
    summary = page.locator("#history-summary")
    summary.filter(has_text=f"Showing 1{DASH}10 of 11 tasks").wait_for()
    assert page.locator("#history-list > li").count() == 10
    page.get_by_role("button", name="Older").click()
    summary.filter(has_text="Showing 11 of 11 tasks").wait_for()
    assert page.get_by_role("button", name="Older").is_disabled()
    # Older was pressed onto the last page: the focus is not lost with it.
    assert page.evaluate("document.activeElement.id") == "history-summary"
    page.get_by_role("button", name="Newer").click()
    summary.filter(has_text=f"Showing 1{DASH}10 of 11 tasks").wait_for()
    page.get_by_label("Kind").select_option("true")
    page.get_by_role("button", name="Apply").click()
    summary.filter(has_text="No tasks match").wait_for()


def test_a_failed_upload_says_why_and_can_be_retried(
    page: Any, server: Server, api_key: str
) -> None:
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready=true]")
    page.get_by_label("API key").fill(api_key)
    page.get_by_role("button", name="Sign in").click()
    page.set_input_files(
        "#file-input",
        files=[{"name": "cut.png", "mimeType": "image/png", "buffer": png_bytes(8, 8)}],
    )
    item = page.locator("#file-list li").first
    item.wait_for()
    page.get_by_label("Model").select_option("quick-clear-4x")
    # The connection drops during the PUT to the signed link.
    page.route("**/objects/**", lambda route: route.abort())
    listen(page)
    page.get_by_role("button", name="Upscale", exact=True).click()
    item.locator(".file-problem", has_text="Upload failed").wait_for()
    assert "could not be reached" in item.inner_text()
    # Said to screen readers too (the reason is in the list, with the file).
    said(page, "1 image could not be uploaded")
    assert page.locator("#tasks .task").count() == 0
    page.unroute("**/objects/**")
    page.get_by_role("button", name="Upscale", exact=True).click()
    page.locator("#tasks .task .task-state", has_text="Done").wait_for(timeout=60_000)
    assert page.locator("#file-list li").count() == 0


def test_a_file_without_a_readable_size_is_refused_by_name_before_upload(
    page: Any, server: Server
) -> None:
    """A header refusal reads as a sentence about the file, in the server's words."""
    sign_in(page, server, credits=5)
    drop_files(page, {"cut.png": png_bytes(8, 8)[:20]})
    problem = page.locator("#file-list li .file-problem")
    problem.wait_for()
    assert problem.inner_text() == (
        "Will not be sent: cut.png is not a complete PNG image: "
        "its header ends before its dimensions"
    )


def quoted(message: str) -> str:
    """The server's message as the page shows it: `backticked` spans in quotes."""
    return re.sub(r"`([^`]+)`", "\u201c\\1\u201d", message)


@pytest.fixture(scope="module")
def missing_face_model(
    server: Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server set to a face model it does not hold (``server`` first: it
    skips when Chromium is missing)."""
    running = Server(
        tmp_path_factory.mktemp("faces") / "data", workers=0, face_model="gfpgan-x", **SERVER_ENV
    ).start()
    yield running
    running.stop()


def test_face_enhancement_says_the_servers_reason(page: Any, missing_face_model: Server) -> None:
    """The page said "no face-restoration model is installed" whatever the
    reason; here the server holds none of the name it is set to use."""
    key = new_principal(missing_face_model.ctx, credits=5)[0]
    api = ApiClient(missing_face_model.url, key)
    reason = api.http.get("/capabilities").json()["data"]["faceEnhancementMessage"]
    assert "'gfpgan-x' is not installed" in reason
    # The command it names is in backticks: the page shows quotes, not them.
    assert "`upscayl-cloud models add PATH --name gfpgan-x`" in reason
    sign_in_with(page, missing_face_model, key)
    assert page.get_by_label("Enhance faces").is_disabled()
    assert page.locator("#face-help").inner_text() == f"Not available: {quoted(reason)}."
    # A start-task refused for it (faces were there when the page loaded,
    # gone since) reads as the server's reason, not a guess.
    refused = api.start_direct("a.png", png_bytes(8, 8), enhanceFace="true")
    assert refused.status_code == 400
    shown = page.evaluate(
        """async (body) => {
            const { explain } = await import("/web/js/messages.js");
            return explain({ code: body.error, message: body.message, status: 400 });
        }""",
        refused.json(),
    )
    assert shown == (
        f"This server cannot enhance faces: {quoted(refused.json()['message'])}."
        " Untick \u201cEnhance faces\u201d and try again."
    )


def test_two_things_said_at_once_are_both_read_out(page: Any, server: Server) -> None:
    """The second replaced the first before it was read: "1 image could not
    be uploaded" was lost when "Task started" followed within 50 ms."""
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready=true]")
    listen(page)
    page.evaluate(
        """async () => {
            const { announce } = await import("/web/js/dom.js");
            announce("1 image could not be uploaded: the list says why.");
            announce("Task started: 1 image");
        }"""
    )
    said(page, "1 image could not be uploaded: the list says why. Task started: 1 image.")
