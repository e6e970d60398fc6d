"""``upscale()``: what goes wrong with one file stays that file's failure.

A local name that is not UTF-8, an upload answer without its link, a result
whose body does not decode or ends short: each used to end the whole run
(an exception out of ``upscale()``, the tasks already started and charged
neither downloaded nor named) or to pass a short file off as a result.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx

from support.server import Server
from tests.client.helpers import FAST, QUICK_POLL, QUICK_RETRY, dimensions, write_image
from tests.client.relay import Relay, Reply, Seen, StandIn, edit_json, undecodable
from upscayl_cloud.client import Client, upscale

#: Downloads that fail for want of a store are ridden out this long, not 10 minutes.
SHORT_OUTAGE = replace(QUICK_POLL, outage_seconds=0.5)


def test_a_name_that_is_not_utf8_is_sent_with_replacements(client: Client, tmp_path: Path) -> None:
    """A Latin-1 name on a UTF-8 system (a ``str`` with a lone surrogate)
    could not be encoded into get-upload-url's JSON: the run ended there, the
    task of the file before it started and charged but never downloaded."""
    folder = tmp_path / "photos"
    write_image(folder / "good.png", 16, 16)
    raw = os.fsdecode(b"zz\xe9.png")
    odd = write_image(folder / raw, 16, 16, seed=1)
    original = odd.read_bytes()

    report = upscale([folder], model=FAST, scale=2, fmt="png", client=client, batch_size=1)

    assert report.ok, [r.reason for r in report.failed]
    by_name = {r.source.name: r for r in report.results}
    assert set(by_name) == {"good.png", raw}
    result = by_name[raw]
    assert result.output is not None and result.output.parent == folder
    assert dimensions(result.output) == (32, 32)
    assert odd.read_bytes() == original  # the local file is read, never renamed
    status = client.get_task_status(str(result.task_id))
    assert status["files"][0]["originalFileName"] == "zz\ufffd.png"


def test_an_upload_answer_without_its_link_fails_that_file_only(
    server: Server, api_key: str, tmp_path: Path
) -> None:
    """The relay drops ``uploadURL`` from one file's get-upload-url answer (a
    stand-in for a server answering malformed: ours always sends it). Its
    ``KeyError`` ended the run; now it is that file's reason."""
    for seed, name in enumerate(("a.png", "b.png", "c.png")):
        write_image(tmp_path / name, 16, 16, seed=seed)

    def edit(seen: Seen, forward: Callable[[], httpx.Response]) -> httpx.Response | Reply:
        answer = forward()
        if seen.path == "/get-upload-url" and b'"b.png"' in seen.body:
            return edit_json(answer, lambda body: body["data"].pop("uploadURL"))
        return answer

    with (
        Relay(server.url, edit) as relay,
        Client(relay.url, api_key, poll=QUICK_POLL, retry=QUICK_RETRY) as api,
    ):
        report = upscale([tmp_path], model=FAST, scale=2, client=api)
    by_name = {r.source.name: r for r in report.results}
    assert [by_name[n].status for n in ("a.png", "b.png", "c.png")] == ["done", "failed", "done"]
    assert by_name["b.png"].reason == "upload failed: KeyError: 'uploadURL'"


def _results_via(
    store: StandIn, names: set[str]
) -> Callable[[Seen, Callable[[], httpx.Response]], httpx.Response | Reply]:
    """An edit pointing the ``downloadLink`` of the files named ``names``
    (by ``originalFileName``) at ``store``, the real link passed as ``?u=``."""

    def edit(seen: Seen, forward: Callable[[], httpx.Response]) -> httpx.Response | Reply:
        answer = forward()
        if seen.path != "/get-task-status" or not answer.is_success:
            return answer

        def change(body: dict[str, Any]) -> None:
            for entry in body["data"].get("files") or []:
                if entry.get("originalFileName") in names and entry.get("downloadLink"):
                    entry["downloadLink"] = f"{store.url}/r?u={quote(entry['downloadLink'])}"

        return edit_json(answer, change)

    return edit


def test_a_result_that_does_not_decode_fails_that_file_only(
    server: Server, api_key: str, tmp_path: Path
) -> None:
    """One of two results comes from a stand-in store whose gzip body does
    not decode (httpx's ``DecodingError``): it escaped ``upscale()``, the
    other result undownloaded and the report lost. Not retried, nor ridden
    out as an outage: asking again gets the same body."""
    write_image(tmp_path / "a.png", 16, 16)
    write_image(tmp_path / "b.png", 16, 16, seed=1)
    with (
        StandIn(undecodable) as store,
        Relay(server.url, _results_via(store, {"b.png"})) as relay,
        Client(relay.url, api_key, poll=QUICK_POLL, retry=QUICK_RETRY) as api,
    ):
        report = upscale([tmp_path], model=FAST, scale=2, client=api)
    by_name = {r.source.name: r for r in report.results}
    assert by_name["a.png"].status == "done" and by_name["a.png"].output is not None
    assert by_name["a.png"].task_id == by_name["b.png"].task_id  # one task, one bad file
    assert by_name["b.png"].status == "failed"
    reason = by_name["b.png"].reason or ""
    assert reason.startswith("download failed: BAD_RESPONSE: GET download: DecodingError"), reason
    assert f"client status {by_name['b.png'].task_id}" in reason
    assert len(store.headers) == 1


def _half(handler: BaseHTTPRequestHandler) -> None:
    """The first half of the real result (``?u=``), with no ``Content-Length``:
    the connection's close ends the body, as a cut-off transfer would."""
    real = parse_qs(urlsplit(handler.path).query)["u"][0]
    data = httpx.get(real).content
    handler.send_response(200)
    handler.send_header("Content-Type", "image/png")
    handler.end_headers()
    handler.wfile.write(data[: len(data) // 2])
    handler.close_connection = True


def test_a_result_shorter_than_its_final_file_size_is_not_taken(
    server: Server, api_key: str, tmp_path: Path
) -> None:
    """A stand-in store sends half of the real result and closes (no
    ``Content-Length`` to tell httpx). The task's ``finalFileSize`` (this
    server's: the result's bytes) says it is short: the file fails, and no
    half image is left under a result's name."""
    source = write_image(tmp_path / "a.png", 16, 16)
    with (
        StandIn(_half) as store,
        Relay(server.url, _results_via(store, {"a.png"})) as relay,
        Client(relay.url, api_key, poll=SHORT_OUTAGE, retry=QUICK_RETRY) as api,
    ):
        report = upscale([source], model=FAST, scale=2, fmt="png", client=api)
    [result] = report.results
    assert result.status == "failed" and result.output is None
    assert "finalFileSize" in (result.reason or ""), result.reason
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["a.png"]
    assert store.headers  # the store was asked, and its short body refused
