"""More files than one task takes, against a server that caps the uploads no
task names yet: the page starts each group's task as soon as the group is up,
and a 429 that is not the hourly limit reads as the server's own message."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from support.client import ApiClient
from support.context import new_principal
from support.images import png_bytes
from support.server import Server
from tests.web.conftest import listen, said

TIMES = "\u00d7"
FILE_BYTES = 996
#: Two files per task; files of about 1000 bytes; the waiting uploads may
#: hold just over one group (2 x 996 bytes), not two: a page that uploads
#: every file before starting any task is refused the third.
FILES_PER_TASK = 2
PENDING_CAP = 2500
#: get-upload-url calls per key and hour, few enough to spend in a test.
UPLOAD_URLS_PER_HOUR = 8


@pytest.fixture(scope="module")
def capped(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A second server (``server`` first: it skips when Chromium is missing)."""
    running = Server(
        tmp_path_factory.mktemp("capped") / "data",
        workers=1,
        engine_threads=2,
        max_files_per_task=FILES_PER_TASK,
        max_upload_bytes=2048,
        max_pending_upload_bytes=PENDING_CAP,
        rate_limits=json.dumps({"get-upload-url": f"{UPLOAD_URLS_PER_HOUR}/hour"}),
    ).start()
    yield running
    running.stop()


def png_of_size(width: int) -> bytes:
    """A ``width`` x 8 PNG of exactly FILE_BYTES (a padding chunk takes 12 + its length)."""
    return png_bytes(width, 8, padding=FILE_BYTES - 12 - len(png_bytes(width, 8)))


def sign_in(page: Any, server: Server, key: str) -> None:
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready=true]")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Upscale images").wait_for()


def choose(page: Any, files: dict[str, bytes]) -> None:
    """Pick files with the file picker, then the fast model at 2x."""
    page.set_input_files(
        "#file-input",
        files=[
            {"name": name, "mimeType": "image/png", "buffer": data} for name, data in files.items()
        ],
    )
    page.locator("#file-list li").nth(len(files) - 1).wait_for()
    page.get_by_label("Model").select_option("quick-clear-4x")
    page.get_by_label(f"2{TIMES}").check()


def test_each_group_starts_its_task_before_the_next_group_uploads(
    page: Any, capped: Server
) -> None:
    key = new_principal(capped.ctx, credits=10)[0]
    sign_in(page, capped, key)
    # Widths 8..12 tell the results apart.
    files = {f"p{n}.png": png_of_size(8 + n) for n in range(5)}
    assert {len(data) for data in files.values()} == {FILE_BYTES}
    choose(page, files)
    page.get_by_role("button", name="Upscale", exact=True).click()

    # Every upload done (the options unlock), none refused.
    page.locator("#model:enabled").wait_for()
    assert page.locator("#file-list .file-problem:not([hidden])").all_inner_texts() == []
    assert page.locator("#file-list li").count() == 0
    # Three groups (2, 2, 1), three tasks; the newest card comes first.
    cards = page.locator("#tasks .task")
    assert cards.count() == 3
    for n in range(3):
        cards.nth(n).locator(".task-state", has_text="Done").wait_for(timeout=90_000)
    facts = [
        [result.locator(".file-facts").inner_text() for result in card.locator(".result").all()]
        for card in cards.all()
    ]
    widths = [[int(re.search(rf"(\d+) {TIMES} ", f)[1]) for f in card] for card in facts]
    assert widths == [[24], [20, 22], [16, 18]], facts  # 2x, in the order chosen
    sources = [[re.search(r"from (\S+)", f)[1] for f in card] for card in facts]
    assert sources == [["p4.png"], ["p2.png", "p3.png"], ["p0.png", "p1.png"]], facts
    page.locator("#credits", has_text="5 credits left").wait_for()


def test_the_cap_on_waiting_uploads_reads_as_the_servers_message(page: Any, capped: Server) -> None:
    key = new_principal(capped.ctx, credits=5)[0]
    # Another client uploaded (here: asked for a link) and started no task.
    ApiClient(capped.url, key).upload_url("elsewhere.png", "image/png", 2048)
    sign_in(page, capped, key)
    choose(page, {"late.png": png_of_size(8)})
    page.get_by_role("button", name="Upscale", exact=True).click()
    problem = page.locator("#file-list li .file-problem", has_text="Upload failed")
    problem.wait_for()
    text = problem.inner_text()
    assert text.startswith(
        "Upload failed: Uploads waiting for a task already hold 2048 bytes of "
        f"this account's {PENDING_CAP}, and this one needs {FILE_BYTES}. "
        "Start tasks for the files uploaded"
    ), text
    assert "this hour" not in text
    # The wait is the time until the waiting upload expires (a day by default).
    assert text.endswith("or wait until the oldest expire (in about 24 hours)."), text
    assert page.locator("#tasks .task").count() == 0


def test_the_hourly_limit_on_upload_links_still_says_this_hour(page: Any, capped: Server) -> None:
    key = new_principal(capped.ctx, credits=5)[0]
    api = ApiClient(capped.url, key)
    for n in range(UPLOAD_URLS_PER_HOUR):  # one byte each: far below the cap
        api.upload_url(f"u{n}.png", "image/png", 1)
    sign_in(page, capped, key)
    choose(page, {"late.png": png_bytes(8, 8)})
    page.get_by_role("button", name="Upscale", exact=True).click()
    problem = page.locator("#file-list li .file-problem", has_text="Upload failed")
    problem.wait_for()
    assert problem.inner_text() == (
        "Upload failed: Too many requests this hour. You can try again in 60 minutes."
    )


def test_after_a_402_the_next_groups_are_not_uploaded(page: Any, capped: Server) -> None:
    """The page saw four credits; another program spent three meanwhile. The
    first group's task is refused (402), and so would every next one be:
    they used to be uploaded and refused all the same (here, with the first
    group's uploads still waiting, the cap refused their uploads too)."""
    key = new_principal(capped.ctx, credits=4)[0]
    asked: list[str] = []
    page.on(
        "request",
        lambda r: (
            asked.append(r.url.rsplit("/", 1)[1])
            if r.url.endswith(("/get-upload-url", "/start-task"))
            else None
        ),
    )
    sign_in(page, capped, key)
    listen(page)
    choose(page, {f"p{n}.png": png_of_size(8 + n) for n in range(4)})  # two groups
    other = ApiClient(capped.url, key)
    for n in range(3):
        assert other.start_direct(f"x{n}.png", png_bytes(8, 8)).status_code == 200
    page.get_by_role("button", name="Upscale", exact=True).click()
    page.locator("#model:enabled").wait_for()
    assert asked == ["get-upload-url", "get-upload-url", "start-task"]
    problems = page.locator("#file-list li .file-problem").all_inner_texts()
    assert len(problems) == 4
    # The first group was uploaded, its task refused; the second never sent.
    assert all(p.startswith("Not started: Not enough credits") for p in problems[:2]), problems
    assert all(p.startswith("Not sent: Not enough credits") for p in problems[2:]), problems
    said(page, "2 more images not sent.")
    # The balance shown is the real one again, and the Upscale button says so.
    page.locator("#credits", has_text="1 credit left").wait_for()
    assert page.get_by_role("button", name="Upscale", exact=True).is_disabled()


def test_after_the_hourly_limit_on_upload_links_the_rest_is_not_sent(
    page: Any, capped: Server
) -> None:
    """Once get-upload-url said the hour's links were spent, the page went on
    asking for one for every file left (each refused alike): past ~100 files
    a run only spent requests. The first group gets one link of the two it
    asks for; the group after it is not asked for, and says when it can go."""
    key = new_principal(capped.ctx, credits=5)[0]
    api = ApiClient(capped.url, key)
    for n in range(UPLOAD_URLS_PER_HOUR - 1):  # one byte each: far below the cap
        api.upload_url(f"u{n}.png", "image/png", 1)
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if r.url.endswith("/get-upload-url") else None)
    sign_in(page, capped, key)
    listen(page)
    choose(page, {f"p{n}.png": png_of_size(8 + n) for n in range(3)})  # groups of 2 and 1
    page.get_by_role("button", name="Upscale", exact=True).click()
    page.locator("#model:enabled").wait_for()
    hourly = "Too many requests this hour. You can try again in 60 minutes."
    problems = page.locator("#file-list li .file-problem").all_inner_texts()
    assert problems == [f"Upload failed: {hourly}", f"Not sent: {hourly}"], problems
    assert page.locator("#file-list .file-name").all_inner_texts()[1] == "p2.png"
    assert len(asked) == 2
    said(page, "1 more image not sent.")
    # The file that got its link went up, and its task started.
    page.locator("#tasks .task[data-task-id]").wait_for()
    assert page.locator("#tasks .task").count() == 1
