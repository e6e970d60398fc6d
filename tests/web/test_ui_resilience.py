"""The page through a server that is busy, restarting or slow to answer:
503s, a 500 or a proxy's 429 while a task is watched, a reload during an
outage, a part PUT or a completion that fails once, download links older
than their lifetime. The failures are stand-ins played by the browser's
request routing (a real restart cannot be timed to one request), everything
else is the real server."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from support.context import new_principal
from support.images import png_bytes
from support.server import Server
from tests.web.conftest import SERVER_ENV
from tests.web.test_ui_batches import choose, sign_in


def _busy(route: Any) -> None:
    route.fulfill(
        status=503,
        headers={"Retry-After": "2", "Content-Type": "application/json"},
        body=json.dumps({"error": "SERVICE_UNAVAILABLE", "message": "retry shortly"}),
    )


def _first_answered_by(answer: Callable[[Any], None], calls: list[str]) -> Callable[[Any], None]:
    """A route handler: the first request gets ``answer``, the rest reach the
    server; every request's URL is added to ``calls``."""

    def handle(route: Any) -> None:
        calls.append(route.request.url)
        if len(calls) == 1:
            answer(route)
        else:
            route.continue_()

    return handle


def test_a_busy_server_is_waited_out_while_a_task_is_watched(page: Any, server: Server) -> None:
    """A 503 used to end the watch ("Something went wrong") for good."""
    key = new_principal(server.ctx, credits=5)[0]
    sign_in(page, server, key)
    page.route("**/get-task-status", _busy)
    choose(page, {"a.png": png_bytes(8, 8)})
    page.get_by_role("button", name="Upscale", exact=True).click()
    state = page.locator("#tasks .task .task-state")
    state.filter(has_text="The server is busy or restarting; trying again in").wait_for()
    page.unroute("**/get-task-status")
    state.filter(has_text="Done").wait_for(timeout=60_000)


def test_a_500_or_a_proxys_429_while_watching_is_waited_out(page: Any, server: Server) -> None:
    """Either ended the watch for good: the card said "Waiting in the queue"
    while the task ran on, with no way to look again."""
    sign_in(page, server, new_principal(server.ctx, credits=5)[0])
    answers = [
        # A passing failure (a locked database, say): our JSON, no Retry-After.
        (500, {"Content-Type": "application/json"}, '{"error": "INTERNAL_SERVER_ERROR"}'),
        # A proxy's rate limit: its own page, not our JSON.
        (429, {"Retry-After": "1", "Content-Type": "text/html"}, "<h1>Too Many Requests</h1>"),
    ]

    def failing_first(route: Any) -> None:
        if answers:
            status, headers, body = answers.pop(0)
            route.fulfill(status=status, headers=headers, body=body)
        else:
            route.continue_()

    page.route("**/get-task-status", failing_first)
    choose(page, {"a.png": png_bytes(8, 8)})
    page.get_by_role("button", name="Upscale", exact=True).click()
    state = page.locator("#tasks .task .task-state")
    state.filter(has_text="The server met an error; trying again in").wait_for()
    state.filter(has_text="Too many requests; trying again in").wait_for(timeout=30_000)
    state.filter(has_text="Done").wait_for(timeout=60_000)
    assert page.locator("#tasks .task .error").inner_text() == ""


def _server_error(route: Any) -> None:
    """A 500 of ours (a stand-in: a real one cannot be caused on cue); its
    Retry-After keeps the waits short (1, 2, 4 s; 5, 10, 20 s without one)."""
    route.fulfill(
        status=500,
        headers={"Retry-After": "1", "Content-Type": "application/json"},
        body=json.dumps({"error": "INTERNAL_SERVER_ERROR", "message": "no link could be signed"}),
    )


def test_a_lasting_500_while_watching_is_shown_after_a_few_tries(page: Any, server: Server) -> None:
    """A 500 that lasts (storage credentials expired: no link can be signed)
    was asked about every 10 s for good, spending the key's get-task-status
    budget in minutes, and the card never said what was wrong. Four in a row
    are shown; an answer between them starts the count again. Stand-ins: the
    500s, and the one answer between them ("processing", from the real one:
    the test image is upscaled in an instant)."""
    sign_in(page, server, new_principal(server.ctx, credits=5)[0])
    polls: list[str] = []

    def failing(route: Any) -> None:
        polls.append(route.request.url)
        if len(polls) == 4:
            body = route.fetch().json()
            body["data"].update(status="processing", progress=10, files=[])
            route.fulfill(json=body)
        else:
            _server_error(route)

    page.route("**/get-task-status", failing)
    choose(page, {"a.png": png_bytes(8, 8)})
    page.get_by_role("button", name="Upscale", exact=True).click()
    card = page.locator("#tasks .task").first
    card.locator(".error", has_text="Something went wrong on the server").wait_for(timeout=90_000)
    assert len(polls) == 8  # three 500s, the answer, four 500s; none after
    assert card.locator(".task-state").inner_text() == "Status unknown"


def test_only_changes_of_state_are_read_out_not_the_countdown_or_percentage(
    page: Any, server: Server
) -> None:
    """The card's live state was rewritten every second of a wait ("trying
    again in 9 s", "8 s", ...) and at every poll ("Upscaling... 40 %"), each
    read out by screen readers."""
    sign_in(page, server, new_principal(server.ctx, credits=5)[0])
    polls: list[int] = []

    def slow_task(route: Any) -> None:
        # Stand-ins: a task that takes polls to finish (the test images are
        # upscaled in an instant), then a busy server until the real answer
        # is the end: a real one still running (a slow machine) would add
        # its state, "Upscaling..." again, to what is read out.
        polls.append(1)
        if len(polls) == 4:
            _busy(route)
            return
        response = route.fetch()
        body = response.json()
        if len(polls) <= 3:
            body["data"].update(status="processing", progress=30 * len(polls), files=[])
            route.fulfill(json=body)
        elif body["data"]["status"] in ("completed", "failed"):
            route.fulfill(response=response)
        else:
            _busy(route)

    page.route("**/get-task-status", slow_task)
    page.evaluate(
        """() => {
            window.__live = [];
            const changed = (changes) => {
                for (const { target } of changes) {
                    const live = (target.nodeType === 1 ? target : target.parentElement)
                        .closest("[aria-live]");
                    if (live) window.__live.push(live.textContent);
                }
            };
            new MutationObserver(changed).observe(document.getElementById("tasks"),
                {childList: true, characterData: true, subtree: true});
        }"""
    )
    choose(page, {"a.png": png_bytes(8, 8)})
    page.get_by_role("button", name="Upscale", exact=True).click()
    state = page.locator("#tasks .task .task-state")
    state.filter(has_text="Upscaling\u2026 60 %").wait_for()
    state.filter(has_text="trying again in 1 s").wait_for(timeout=30_000)  # counted down
    state.filter(has_text="Done").wait_for(timeout=60_000)
    assert page.evaluate("window.__live") == [
        "Upscaling\u2026",
        "The server is busy or restarting;",
        "Done",
    ]


def test_a_reload_during_an_outage_keeps_the_key(page: Any, server: Server) -> None:
    key = new_principal(server.ctx, credits=5)[0]
    sign_in(page, server, key)
    page.route("**/capabilities", _busy)
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert "Your key is kept" in page.locator("#signin-error").inner_text()
    page.unroute("**/capabilities")
    page.get_by_role("button", name="Sign in").click()  # the key is in the field
    page.get_by_role("heading", name="Upscale images").wait_for()


def _upload_big_file_meeting(
    page: Any, server: Server, part: int, answers: list[tuple[int, str]]
) -> list[str]:
    """Upload a two-part file, part ``part``'s PUTs answered ``answers`` in
    turn (then let through); returns that part's PUTs."""
    sign_in(page, server, new_principal(server.ctx, credits=5)[0])
    tries: list[str] = []

    def answer(route: Any) -> None:
        if f"partNumber={part}" in route.request.url:
            tries.append(route.request.url)
            if len(tries) <= len(answers):
                status, body = answers[len(tries) - 1]
                route.fulfill(status=status, body=body)
                return
        route.continue_()

    page.route("**/objects/**", answer)
    choose(page, {"big.png": png_bytes(16, 16, padding=6 * 1024 * 1024)})  # two parts
    page.get_by_role("button", name="Upscale", exact=True).click()
    return tries


def test_a_part_that_fails_once_is_sent_again(page: Any, server: Server) -> None:
    """One failed PUT used to fail the whole file."""
    tries = _upload_big_file_meeting(page, server, 2, [(503, "SlowDown")])
    page.locator("#tasks .task .task-state", has_text="Done").wait_for(timeout=60_000)
    assert len(tries) == 2


def test_a_completion_that_fails_once_is_sent_again(page: Any, server: Server) -> None:
    """Each part had three tries, the completion one: a 503 there lost the
    whole file, although completing again is safe (docs/api.md)."""
    completions: list[str] = []
    page.route("**/complete-multipart-upload", _first_answered_by(_busy, completions))
    tries = _upload_big_file_meeting(page, server, 1, [])
    page.locator("#tasks .task .task-state", has_text="Done").wait_for(timeout=60_000)
    assert len(completions) == 2 and len(tries) == 1


def test_a_refused_part_is_not_sent_again_and_fails_its_file(page: Any, server: Server) -> None:
    tries = _upload_big_file_meeting(page, server, 1, [(403, "AccessDenied")] * 3)
    page.locator("#file-list li .file-problem", has_text="Upload failed").wait_for()
    assert len(tries) == 1


@pytest.fixture(scope="module")
def short_links(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Download links that live 61 s: past 1 s the page signs new ones
    (it keeps a minute's margin)."""
    running = Server(
        tmp_path_factory.mktemp("short-links") / "data",
        workers=1,
        download_url_ttl_seconds=61,
        **SERVER_ENV,
    ).start()
    yield running
    running.stop()


def _done_with_old_links(page: Any, server: Server) -> Any:
    """Sign in, upscale one image and wait until the links its task finished
    with are old (past 1 s, see short_links); returns its card."""
    sign_in(page, server, new_principal(server.ctx, credits=5)[0])
    choose(page, {"a.png": png_bytes(8, 8)})
    page.get_by_role("button", name="Upscale", exact=True).click()
    card = page.locator("#tasks .task").first
    card.locator(".task-state", has_text="Done").wait_for(timeout=60_000)
    page.wait_for_timeout(1_500)
    return card


def test_an_old_download_link_is_signed_again_before_use(page: Any, short_links: Server) -> None:
    card = _done_with_old_links(page, short_links)
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "get-task-status" in r.url else None)
    with page.expect_download() as download:
        card.get_by_role("link", name="Download").first.click()
    assert download.value.failure() is None
    assert len(asked) == 1  # a fresh status signed the link used


def test_compare_uses_a_link_signed_when_it_opens(page: Any, short_links: Server) -> None:
    """It used the link the task finished with, expired after an hour (a
    broken image); Download signed a new one, Compare did not."""
    card = _done_with_old_links(page, short_links)
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "get-task-status" in r.url else None)
    card.get_by_role("button", name="Compare").click()
    after = card.locator("img.compare-after")
    after.wait_for()
    loaded = "(img) => img.complete && img.naturalWidth > 0"
    page.wait_for_function(loaded, arg=after.element_handle())
    assert len(asked) == 1  # a fresh status signed the link shown


def test_a_failed_compare_leaves_no_error_once_it_opens(page: Any, short_links: Server) -> None:
    """Download and Compare share one error line, never cleared: Compare's
    failure stayed beside the comparison that opened on the next press. The
    failure is a stand-in (a 500 for the status call that signs a new link)."""
    card = _done_with_old_links(page, short_links)
    asked: list[str] = []
    page.route("**/get-task-status", _first_answered_by(_server_error, asked))
    compare = card.get_by_role("button", name="Compare")
    compare.click()
    error = card.locator(".result .error")
    error.filter(has_text="Something went wrong on the server").wait_for()
    compare.click()
    card.locator("img.compare-after").wait_for()
    assert error.count() == 0
    assert len(asked) == 2


def test_sign_out_clears_the_history_list(page: Any, server: Server) -> None:
    key = new_principal(server.ctx, credits=5)[0]
    sign_in(page, server, key)
    choose(page, {"a.png": png_bytes(8, 8)})
    page.get_by_role("button", name="Upscale", exact=True).click()
    page.locator("#tasks .task .task-state", has_text="Done").wait_for(timeout=60_000)
    page.get_by_role("link", name="History").click()
    page.locator("#history-list li").first.wait_for()
    page.get_by_role("button", name="Sign out").click()
    assert page.locator("#history-list li").count() == 0


def test_zip_names_are_unique_and_its_size_is_checked_first(page: Any, server: Server) -> None:
    """Names as Windows and macOS extract them ("a.png, a.png, a (2).png"
    gave two "a (2).png"); a batch over 1 GB is refused before any download
    (every file is held in memory until the archive is offered)."""
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready=true]")
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "nothing-here" in r.url else None)
    names, refused = page.evaluate(
        """async () => {
            const zip = await import('/web/js/zip.js');
            const names = zip.uniqueNames(['a.png', 'a.png', 'a (2).png', 'A.PNG']);
            const big = [{name: 'x.png', url: '/nothing-here', size: 2 ** 31}];
            const refused = await zip.downloadAsZip(big, 'z.zip').then(() => null, (e) => e.code);
            return [names, refused];
        }"""
    )
    assert names == ["a.png", "a (2).png", "a (2) (2).png", "A (3).PNG"]
    assert refused == "ZIP_TOO_LARGE" and asked == []


def test_a_thumbnail_that_fails_to_load_is_signed_again(page: Any, server: Server) -> None:
    """A thumbnail loaded lazily after its link expired (a history card
    scrolled into view an hour later) stayed a broken image. The expiry is a
    stand-in: the first thumbnail request is answered 403, as an expired
    link is."""
    thumbnails: list[str] = []

    def expired_once(route: Any) -> None:
        thumbnails.append(route.request.url)
        if len(thumbnails) == 1:
            route.fulfill(status=403, body="link expired")
        else:
            route.continue_()

    page.route("**/objects/thumbs/**", expired_once)
    sign_in(page, server, new_principal(server.ctx, credits=5)[0])
    choose(page, {"a.png": png_bytes(8, 8)})
    page.get_by_role("button", name="Upscale", exact=True).click()
    card = page.locator("#tasks .task").first
    card.locator(".task-state", has_text="Done").wait_for(timeout=60_000)
    thumb = card.locator("img.thumb")
    loaded = "(img) => img.complete && img.naturalWidth > 0"
    page.wait_for_function(loaded, arg=thumb.element_handle(), timeout=10_000)
    assert len(thumbnails) == 2 and thumbnails[0] != thumbnails[1]
