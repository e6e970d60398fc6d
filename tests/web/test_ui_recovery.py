"""What a person meets when things go other than planned: a task refused for
want of credits, a page reloaded mid-task, a sign-out on a shared computer,
a server that stops answering, a file removed while uploads run. A server
without workers keeps tasks queued for as long as a test needs them to run."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from support.client import ApiClient
from support.context import new_principal
from support.images import png_bytes
from support.server import Server
from tests.web.conftest import PHONE, SERVER_ENV
from tests.web.test_ui_batches import choose, sign_in
from tests.web.test_ui_states import drop_files
from upscayl_cloud.services import keys


@pytest.fixture(scope="module")
def queued(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose tasks wait in the queue (``server`` first: it skips
    when Chromium is missing)."""
    running = Server(tmp_path_factory.mktemp("queued") / "data", workers=0, **SERVER_ENV).start()
    yield running
    running.stop()


def _until(page: Any, condition: Callable[[], bool], seconds: float = 60) -> None:
    """Wait until ``condition()`` holds, the page's events (routes, requests) let through."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        page.wait_for_timeout(50)


def _upload_urls(page: Any) -> list[str]:
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "get-upload-url" in r.url else None)
    return asked


def test_a_task_refused_for_credits_keeps_its_files_and_their_uploads(
    page: Any, queued: Server
) -> None:
    """The page saw two credits; another program spent them meanwhile. The
    402 keeps the files listed with the server's words and shows the real
    balance; once credits are added (the page sees them when its tab is back
    in focus) the next press starts the task without uploading them again."""
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

    # The header shows the balance as it is (it said 2 left), and the press
    # waits for more credits.
    page.locator("#credits", has_text="1 credit left").wait_for()
    assert page.get_by_role("button", name="Upscale", exact=True).is_disabled()
    keys.add_credits(queued.ctx, key, 5)
    page.evaluate("window.dispatchEvent(new Event('focus'))")  # back from asking for more
    page.locator("#credits", has_text="6 credits left").wait_for()
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
    assert "hourly request limit" not in state.inner_text().lower()


def test_after_a_402_upscale_waits_for_the_real_balance(page: Any, queued: Server) -> None:
    """After a 402 the options unlocked at once, with the balance from before
    it: Upscale was enabled until the new balance came, and a quick press
    met another 402. The balance's answer is held here (a stand-in for a
    slow one); the 402 is the real server's."""
    key = new_principal(queued.ctx, credits=2)[0]
    sign_in(page, queued, key)
    choose(page, {"a.png": png_bytes(8, 8), "b.png": png_bytes(9, 8)})
    spent = ApiClient(queued.url, key).start_direct("x.png", png_bytes(8, 8))
    assert spent.status_code == 200, spent.text  # one credit left, two needed
    refused: list[int] = []
    page.on("response", lambda r: r.url.endswith("/start-task") and refused.append(r.status))
    held: list[Any] = []
    released: list[bool] = []

    def after_the_402(route: Any) -> None:  # a focus may ask for the balance before
        if refused and not released:
            held.append(route)
        else:
            route.continue_()

    page.route("**/capabilities", after_the_402)
    page.get_by_role("button", name="Upscale", exact=True).click()
    _until(page, lambda: bool(held))
    assert refused == [402]
    upscale = page.get_by_role("button", name="Upscale", exact=True)
    assert upscale.is_disabled()
    released.append(True)
    for route in held:
        route.continue_()
    page.locator("#credits", has_text="1 credit left").wait_for()
    page.locator("#model:enabled").wait_for()  # the options unlocked, with the real balance
    assert upscale.is_disabled()


def test_a_sign_out_mid_upload_stops_the_uploads(page: Any, queued: Server) -> None:
    """A refused key signs the page out mid-upload (the only sign-out then:
    the button is disabled): the PUTs and parts in flight went on sending,
    and the completion went out after them with whichever key was signed in
    by then. The PUTs are held (a stand-in for a slow network); the 401 is
    the real server's, for the key revoked meanwhile."""
    key = new_principal(queued.ctx, credits=5)[0]
    sign_in(page, queued, key)
    big = png_bytes(16, 16, padding=6 * 1024 * 1024)  # two parts
    choose(page, {"big.png": big, "small.png": png_bytes(8, 8)})
    held: list[Any] = []
    page.route("**/objects/**", lambda route: held.append(route))
    cancelled: list[str] = []
    page.on("requestfailed", lambda r: cancelled.append(r.url) if "/objects/" in r.url else None)
    page.get_by_role("button", name="Upscale", exact=True).click()
    _until(page, lambda: len(held) == 3)  # both parts and the small file
    keys.revoke_key(queued.ctx, key)
    page.evaluate("window.dispatchEvent(new Event('focus'))")  # the page asks for the balance
    page.get_by_role("heading", name="Sign in").wait_for()
    _until(page, lambda: len(cancelled) == 3)
    assert sorted(cancelled) == sorted(route.request.url for route in held)


def test_a_late_refusal_of_the_last_key_does_not_sign_out_the_next(
    page: Any, queued: Server
) -> None:
    """A call made with the first key before its sign-out (the balance, as
    the page asks for it on focus) answered 401 once the next person had
    signed in: the page signed them out. The call's answer is held until
    then (a stand-in for a slow one); its 401 is the real server's, the
    first key revoked meanwhile."""
    first = new_principal(queued.ctx, credits=5)[0]
    sign_in(page, queued, first)
    held: list[Any] = []
    page.route("**/capabilities", lambda route: route.continue_() if held else held.append(route))
    page.evaluate(
        """async () => {
            const { api } = await import("/web/js/api.js");
            window.__late = api.capabilities().then(() => 200, (err) => err.status);
        }"""
    )
    _until(page, lambda: bool(held))
    keys.revoke_key(queued.ctx, first)
    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("API key").fill(new_principal(queued.ctx, credits=5)[0])
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Upscale images").wait_for()
    held[0].continue_()
    assert page.evaluate("window.__late") == 401  # answered, and handled
    assert page.get_by_role("heading", name="Upscale images").is_visible()
    assert page.locator("#signin-error").inner_text() == ""


#: Runs in the page: ``window.__answered`` settles once the page has read
#: start-task's answer and done all it does right after (a timer runs only
#: once the promise callbacks waiting on that answer have run).
_WATCH_START = """() => {
    const fetched = window.fetch;
    let answered;
    window.__answered = new Promise((resolve) => { answered = resolve; });
    window.fetch = async (...args) => {
        const response = await fetched(...args);
        if (args[0] === "/start-task") {
            const json = response.json.bind(response);
            response.json = () => {
                const body = json();
                const after = () => setTimeout(answered, 0);
                body.then(after, after);
                return body;
            };
        }
        return response;
    };
}"""


def test_a_task_started_as_the_key_was_refused_is_not_remembered(page: Any, queued: Server) -> None:
    """start-task answered after a refused key had signed the page out: the
    task was remembered in the tab (for whoever reloads it next) and "Task
    started" read out. The answer is held (a stand-in for a slow one) while
    the key is revoked and the page, asking for the balance, is refused (the
    real server's 401); the task itself is the real server's."""
    key = new_principal(queued.ctx, credits=5)[0]
    sign_in(page, queued, key)
    choose(page, {"a.png": png_bytes(8, 8)})
    held: list[Any] = []
    page.route("**/start-task", lambda route: held.append(route))
    page.evaluate(_WATCH_START)
    page.get_by_role("button", name="Upscale", exact=True).click()
    _until(page, lambda: bool(held))
    answer = held[0].fetch()  # the real server starts the task
    assert answer.status == 200, answer.text()
    keys.revoke_key(queued.ctx, key)
    page.evaluate("window.dispatchEvent(new Event('focus'))")
    page.get_by_role("heading", name="Sign in").wait_for()
    held[0].fulfill(response=answer)
    page.evaluate("window.__answered")
    assert page.evaluate("sessionStorage.getItem('upscayl-cloud.tasks')") is None


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


def test_files_still_being_read_at_sign_out_are_not_listed_for_the_next_key(
    page: Any, queued: Server
) -> None:
    """The images are read one by one; a sign-out in between emptied the
    list, and the reading went on filling it, for the next person."""
    sign_in(page, queued, new_principal(queued.ctx, credits=5)[0])
    files = {f"private-{n}.png": png_bytes(8, 8) for n in range(3)}
    # Signed out while the first file is read: the drop, bubbling on, clicks
    # Sign out once the page has begun reading (a person is slower, the
    # files bigger and more).
    page.evaluate(
        "() => window.addEventListener('drop',"
        " () => document.getElementById('sign-out').click(), {once: true})"
    )
    drop_files(page, files)
    page.get_by_role("heading", name="Sign in").wait_for()
    page.wait_for_timeout(500)  # ample for three tiny files to be read
    # Not in the (hidden) list either: a sign-in clears it, but files read
    # after that (of a hundred chosen) were the next key's to see and send.
    assert page.locator("#file-list li").count() == 0
    page.get_by_label("API key").fill(new_principal(queued.ctx, credits=5)[0])
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Upscale images").wait_for()
    choose(page, {"mine.png": png_bytes(8, 8)})
    assert page.locator("#file-list .file-name").all_inner_texts() == ["mine.png"]


def _away(route: Any) -> None:
    """The server restarting (a stand-in: a real restart cannot be timed to one call)."""
    route.fulfill(
        status=503,
        headers={"Retry-After": "2", "Content-Type": "application/json"},
        body=json.dumps({"error": "SERVICE_UNAVAILABLE", "message": "retry shortly"}),
    )


def test_another_key_after_a_reload_during_an_outage_gets_none_of_the_tasks(
    page: Any, queued: Server
) -> None:
    """The reload kept the first key's tasks (and the key, to sign in again
    with); a different key signing in resumed and showed them."""
    first = new_principal(queued.ctx, credits=5)[0]
    sign_in(page, queued, first)
    choose(page, {"a.png": png_bytes(8, 8)})
    page.get_by_role("button", name="Upscale", exact=True).click()
    page.locator("#tasks .task[data-task-id]").wait_for()
    page.route("**/capabilities", _away)
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    page.unroute("**/capabilities")
    page.get_by_label("API key").fill(new_principal(queued.ctx, credits=5)[0])
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Upscale images").wait_for()
    assert page.locator("#tasks .task").count() == 0
    assert page.evaluate("sessionStorage.getItem('upscayl-cloud.tasks')") is None


def test_a_remembered_task_the_server_does_not_know_is_forgotten(page: Any, queued: Server) -> None:
    """Its watch failed (404) after every reload, for as long as the tab lived."""
    sign_in(page, queued, new_principal(queued.ctx, credits=5)[0])
    gone = str(uuid.uuid4())  # a task the server does not (or no longer) know
    page.evaluate(
        "(id) => sessionStorage.setItem('upscayl-cloud.tasks',"
        " JSON.stringify([{taskId: id, title: '1 image'}]))",
        gone,
    )
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    card = page.locator(f'#tasks .task[data-task-id="{gone}"]')
    card.locator(".error", has_text="could not be found").wait_for()
    assert page.evaluate("sessionStorage.getItem('upscayl-cloud.tasks')") == "[]"
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    page.get_by_role("heading", name="Upscale images").wait_for()
    assert page.locator("#tasks .task").count() == 0


def test_a_key_revoked_while_signed_in_signs_out_with_the_reason(page: Any, queued: Server) -> None:
    """The page stayed signed in, every call failing with the same error."""
    key = new_principal(queued.ctx, credits=5)[0]
    sign_in(page, queued, key)
    keys.revoke_key(queued.ctx, key)
    page.get_by_role("link", name="History").click()
    page.get_by_role("heading", name="Sign in").wait_for()
    assert "You have been signed out" in page.locator("#signin-error").inner_text()
    assert "was not accepted" in page.locator("#signin-error").inner_text()
    assert page.evaluate("sessionStorage.getItem('upscayl-cloud.apiKey')") is None


#: Runs in the page: a 2000 x 1000 comparison of a plain picture, appended
#: to the page (the touch test needs a picture wider than a phone, not an
#: upscaled one).
_WIDE_COMPARISON = """async () => {
    const { comparison } = await import("/web/js/compare.js");
    const canvas = document.createElement("canvas");
    canvas.width = 2000;
    canvas.height = 1000;
    const url = canvas.toDataURL();
    const size = { width: 2000, height: 1000 };
    const figure = comparison({ before: url, after: url, ...size, name: "x.png" });
    figure.id = "wide";
    document.getElementById("main").prepend(figure);
}"""


def _swipe(page: Any, cdp: Any, x0: float, x1: float, y: float) -> None:
    """A finger moving from x0 to x1 (CDP touch input: Playwright's touchscreen only taps)."""
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x0, "y": y}]})
    for step in range(1, 11):
        point = {"x": x0 + (x1 - x0) * step / 10, "y": y}
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [point]})
        page.wait_for_timeout(20)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    page.wait_for_timeout(300)


def test_a_zoomed_comparison_pans_by_touch_and_its_divider_still_drags(
    page: Any, server: Server
) -> None:
    """A finger anywhere on the picture moved the divider (touch-action:
    none), so a zoomed picture could not be panned on a phone at all."""
    page.set_viewport_size(PHONE)
    cdp = page.context.new_cdp_session(page)
    cdp.send("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 1})
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready=true]")
    page.evaluate(_WIDE_COMPARISON)
    page.locator("#wide select").select_option("1")  # 100 %: 2000 px in a 390 px screen
    view = page.locator("#wide .compare-viewport")
    slider = page.locator("#wide input[type=range]")
    box = view.bounding_box()
    y = box["y"] + box["height"] / 2
    # The divider drags (it opened in the middle of the view).
    line = page.locator("#wide .compare-divider").bounding_box()
    assert abs(line["x"] - (box["x"] + box["width"] / 2)) < 5
    _swipe(page, cdp, line["x"] + 1, line["x"] - 100, y)
    moved = int(slider.input_value())
    assert moved < 50
    # A swipe on the picture, away from the divider, pans it.
    scrolled = view.evaluate("(v) => v.scrollLeft")
    _swipe(page, cdp, box["x"] + 300, box["x"] + 40, y)
    assert view.evaluate("(v) => v.scrollLeft") > scrolled
    assert int(slider.input_value()) == moved


def test_a_zoomed_comparison_still_drags_anywhere_by_mouse(page: Any, server: Server) -> None:
    """Zoomed in, only the divider itself dragged, for a mouse too: only a
    finger pans by dragging, and a mouse or pen could no longer move the
    line from the picture."""
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready=true]")
    page.evaluate(_WIDE_COMPARISON)
    page.locator("#wide select").select_option("1")  # 100 %: wider than the screen
    box = page.locator("#wide .compare-viewport").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + 60, y)  # on the picture, far left of the divider
    page.mouse.down()
    page.mouse.move(box["x"] + 80, y, steps=4)
    page.mouse.up()
    assert int(page.locator("#wide input[type=range]").input_value()) < 50


def test_the_divider_at_the_edge_makes_nothing_scroll_sideways(page: Any, server: Server) -> None:
    """The divider's 40 px grip reached past the picture's right edge with
    the line there: the comparison scrolled sideways in Fit, and zoomed a
    little past the picture's end."""
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready=true]")
    page.evaluate(_WIDE_COMPARISON)
    view = page.locator("#wide .compare-viewport")
    page.locator("#wide input[type=range]").fill("100")
    scroll = "(v) => [v.scrollWidth, v.clientWidth, v.querySelector('.compare-stage').offsetWidth]"
    wide, shown, picture = view.evaluate(scroll)
    assert wide == shown == picture  # Fit: the picture fills the width, nothing more
    page.locator("#wide select").select_option("1")
    wide, shown, picture = view.evaluate(scroll)
    assert wide == picture == 2000 and shown < wide  # zoomed: the picture's width, no more
