"""Which file a server's answer means: results listed under another name than
the upload's ``fileName``, and batch refusals that name the culprit bare.

The rules are pure functions, tested as such; each is also run end to end
through ``upscale()`` against the real server, with a relay changing only the
one thing our server never does (it lists each result under its upload's
``fileName`` and quotes names with ``repr``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.images import png_bytes
from support.server import Server
from tests.client.helpers import FAST, QUICK_POLL, QUICK_RETRY, dimensions, write_image
from tests.client.relay import Relay, Reply, Seen, edit_json
from upscayl_cloud.client import ApiError, Client, upscale
from upscayl_cloud.client.batch import _culprit
from upscayl_cloud.client.files import Source
from upscayl_cloud.client.matching import delivered_entry, named_once


def _source(path: str) -> Source:
    return Source(Path(path), Path(Path(path).name), "image/png", 10)


def test_a_result_is_found_by_file_name_then_original_name_then_alone() -> None:
    sources = {"k-a.png": _source("/x/a.png"), "k-b.png": _source("/x/b.png")}
    listed = [
        {"fileName": "other-b", "originalFileName": "b.png"},
        {"fileName": "k-a.png", "originalFileName": "b.png"},  # a's, by its fileName
    ]
    assert delivered_entry(listed, "k-a.png", sources) is listed[1]
    assert delivered_entry(listed, "k-b.png", sources) is listed[0]
    alone = {"k-c.png": _source("/x/c.png")}
    renamed = [{"fileName": "elsewhere", "originalFileName": "renamed.png"}]
    assert delivered_entry(renamed, "k-c.png", alone) is renamed[0]
    assert delivered_entry([], "k-c.png", alone) is None


def test_an_original_name_two_files_share_matches_neither() -> None:
    """``a.png`` from two folders in one task: the name cannot tell them apart."""
    sources = {"k1": _source("/x/a.png"), "k2": _source("/y/a.png")}
    listed = [{"fileName": "s1", "originalFileName": "a.png"}]
    assert delivered_entry(listed, "k1", sources) is None
    assert delivered_entry(listed, "k2", sources) is None


@pytest.mark.parametrize(
    ("message", "names", "blamed"),
    [
        ('File "f-bad.png" could not be read', ["f-a.png", "f-bad.png"], 1),
        ("File f-bad.png could not be read.", ["f-a.png", "f-bad.png"], 1),
        ("File ba.png: not an image", ["a.png", "ba.png"], 1),
        ("File a.png.png: not an image", ["a.png", "a.png.png"], 1),
        ("File a.png: not an image", ["a.png", "a.png.png"], 0),
        ("File my photo.png is broken", ["photo.png", "my photo.png"], 1),
        ("uploads/a.png is broken", ["a.png", "b.png"], None),
        ("Unsupported file type. Allowed: JPEG, PNG, WEBP", ["a.png", "b.png"], None),
        ("a.png and b.png are broken", ["a.png", "b.png"], None),
    ],
)
def test_a_name_is_blamed_only_as_a_whole_and_only_once(
    message: str, names: list[str], blamed: int | None
) -> None:
    assert named_once(message, names) == blamed


def test_a_refusal_naming_a_file_bare_drops_only_that_file() -> None:
    pending: list[tuple[Source, dict[str, Any]]] = [
        (_source(f"/x/{name}"), {"fileName": f"f-{name}"}) for name in ("a.png", "bad.png")
    ]
    bare = ApiError("BAD_REQUEST", 'File "f-bad.png" could not be read', 400)
    assert _culprit(bare, pending) == 1
    unnamed = ApiError("INVALID_FILE_TYPE", "Unsupported file type. Allowed: JPEG, PNG", 400)
    assert _culprit(unnamed, pending) is None


def test_results_listed_under_other_names_are_downloaded(
    server: Server, api_key: str, tmp_path: Path
) -> None:
    """The relay lists every result under a ``fileName`` of its own (as a
    server naming them by their store key might): a completed, charged task
    reported each file "failed: task completed". Two files are told apart by
    ``originalFileName``; a task of one file by being alone."""
    write_image(tmp_path / "a.png", 24, 16)
    write_image(tmp_path / "b.png", 16, 16, seed=1)
    alone = write_image(tmp_path / "solo" / "c.png", 16, 16, seed=2)

    def edit(seen: Seen, forward: Callable[[], httpx.Response]) -> httpx.Response | Reply:
        answer = forward()
        if seen.path != "/get-task-status" or not answer.is_success:
            return answer

        def rename(body: dict[str, Any]) -> None:
            for entry in body["data"].get("files") or []:
                entry["fileName"] = "results/" + entry["fileName"]
                if entry["originalFileName"] == "c.png":
                    entry["originalFileName"] = "renamed.png"

        return edit_json(answer, rename)

    with (
        Relay(server.url, edit) as relay,
        Client(relay.url, api_key, poll=QUICK_POLL, retry=QUICK_RETRY) as api,
    ):
        pair = upscale([tmp_path / "a.png", tmp_path / "b.png"], model=FAST, scale=2, client=api)
        solo = upscale([alone], model=FAST, scale=2, client=api)
    assert pair.ok and solo.ok, [r.reason for r in pair.failed + solo.failed]
    outputs = {r.source.name: r.output for r in pair.results + solo.results}
    assert outputs["a.png"] is not None and dimensions(outputs["a.png"]) == (48, 32)
    assert outputs["b.png"] is not None and dimensions(outputs["b.png"]) == (32, 32)
    assert outputs["c.png"] == alone.parent / f"c_upscayl_2x_{FAST}.jpg"


def test_a_completed_task_that_lists_no_file_says_where_to_look(
    server: Server, api_key: str, tmp_path: Path
) -> None:
    """The relay empties a completed task's ``files`` (a server that lists
    them elsewhere): the file was reported "failed: task completed"."""
    image = write_image(tmp_path / "a.png", 16, 16)

    def edit(seen: Seen, forward: Callable[[], httpx.Response]) -> httpx.Response | Reply:
        answer = forward()
        if seen.path != "/get-task-status" or not answer.is_success:
            return answer
        return edit_json(answer, lambda body: body["data"].update(files=[]))

    with (
        Relay(server.url, edit) as relay,
        Client(relay.url, api_key, poll=QUICK_POLL, retry=QUICK_RETRY) as api,
    ):
        [result] = upscale([image], model=FAST, scale=2, client=api).results
    assert result.status == "failed" and result.task_id is not None
    assert result.reason == (
        f"task {result.task_id} completed, but its answer does not list this file: "
        f"`upscayl-cloud client status {result.task_id}` shows what it delivered"
    )


def test_a_batch_refused_with_a_bare_name_is_sent_again_without_it(
    server: Server, api_key: str, tmp_path: Path
) -> None:
    """The real refusal (a header claiming 100k x 100k pixels) quotes the
    names with ``'``; the relay quotes them with ``"`` instead, as another
    server might. Only ``repr`` quoting was recognised: the whole batch
    failed."""
    good = write_image(tmp_path / "good.png", 16, 16)
    other = write_image(tmp_path / "other.webp", 16, 16, seed=2)
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_bytes(16, 16)[:16] + (100_000).to_bytes(4, "big") * 2 + b"\0" * 60)
    refusals: list[str] = []

    def edit(seen: Seen, forward: Callable[[], httpx.Response]) -> httpx.Response | Reply:
        answer = forward()
        if seen.path != "/start-task" or answer.status_code != 400:
            return answer
        refusals.append(answer.json()["message"])
        return edit_json(answer, lambda body: body.update(message=refusals[-1].replace("'", '"')))

    with (
        Relay(server.url, edit) as relay,
        Client(relay.url, api_key, poll=QUICK_POLL, retry=QUICK_RETRY) as api,
    ):
        report = upscale([good, huge, other], model=FAST, scale=2, client=api)
    by_name = {r.source.name: r for r in report.results}
    assert len(refusals) == 1 and "'huge.png'" in refusals[0]
    assert by_name["huge.png"].status == "failed"
    assert '"huge.png"' in (by_name["huge.png"].reason or "")
    assert by_name["good.png"].status == by_name["other.webp"].status == "done"
    assert by_name["good.png"].task_id == by_name["other.webp"].task_id is not None
