"""Signed links: tampered ones are refused with 403, expired uploads with 403,
expired downloads with 410; the size cap holds while the body streams."""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from support.client import ApiClient, file_entry, make_client
from support.images import png_bytes
from support.server import Server
from support.stacks import on_s3, stack_env
from upscayl_cloud.services.keys import authenticate


def _with(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query)) | changes
    return urlunsplit(parts._replace(query=urlencode(query)))


def _status(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]


def _expires_at(url: str) -> float:
    """When a signed link stops working, in seconds since the epoch: the local
    store signs ``expires`` in ms, S3 a whole-second date plus a lifetime."""
    query = dict(parse_qsl(urlsplit(url).query))
    if "expires" in query:
        return int(query["expires"]) / 1000
    signed = calendar.timegm(time.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ"))
    return signed + int(query["X-Amz-Expires"])


def _wait_until_expired(*urls: str) -> None:
    time.sleep(max(0.0, max(map(_expires_at, urls)) + 0.3 - time.time()))


def _while_fresh(sign: Callable[[], str], use: Callable[[str], httpx.Response]) -> Any:
    """Use a freshly signed link and expect 200. A refusal counts only when
    the answer came before the link's expiry: a busy machine that let a short
    link lapse between signing and use signs a new one instead."""
    for _ in range(5):
        url = sign()
        response = use(url)
        if response.status_code == 200:
            return response
        assert time.time() >= _expires_at(url), (response.status_code, response.text)
    raise AssertionError("5 fresh links in a row expired before they could be used")


@pytest.mark.usefixtures("local_store")
def test_tampered_upload_links_are_403(client: ApiClient) -> None:
    data = png_bytes()
    link = client.upload_url("a.png", "image/png", len(data))
    url = link["uploadURL"]
    png, jpeg = {"content-type": "image/png"}, {"content-type": "image/jpeg"}
    forged = [
        httpx.put(_with(url, signature="0" * 64), content=data, headers=png),
        httpx.put(
            _with(url, expires=str(int(time.time() * 1000) + 10**9)), content=data, headers=png
        ),
        httpx.put(_with(url, length=str(len(data) + 5)), content=data + b"12345", headers=png),
        httpx.put(url.replace("/uploads/", "/results/"), content=data, headers=png),
        httpx.put(url, content=data + b"extra", headers=png),
        httpx.put(_with(url, type="image/jpeg"), content=data, headers=jpeg),
        httpx.get(url),
    ]
    for response in forged:
        assert _status(response) == (403, "FORBIDDEN"), response.request
    # A genuine link sent with another Content-Type (curl's --data-binary sends
    # a form type) says so, instead of calling the link invalid or expired.
    for sent, named in ((jpeg, "image/jpeg"), ({}, "none")):
        response = httpx.put(url, content=data, headers=sent)
        assert _status(response) == (403, "FORBIDDEN")
        message = response.json()["message"]
        assert message == f"This link is for Content-Type image/png; the request sent {named}"
    assert "Content-Type" not in forged[-2].json()["message"]  # a forged type is forged
    assert httpx.put(url, content=data, headers=png).status_code == 200


@pytest.mark.usefixtures("local_store")
def test_oversized_chunked_body_is_cut_off(client: ApiClient) -> None:
    data = png_bytes()
    link = client.upload_url("a.png", "image/png", len(data))

    def body() -> Iterator[bytes]:  # no Content-Length: the cap must hold while streaming
        yield data
        yield b"x" * 100_000

    response = httpx.put(link["uploadURL"], content=body(), headers={"content-type": "image/png"})
    assert _status(response) == (400, "FILE_SIZE_EXCEEDED")


@pytest.fixture(scope="module")
def short_lived(
    request: pytest.FixtureRequest, stack: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    running = Server(
        tmp_path_factory.mktemp("short") / "data",
        workers=1,
        # S3 signs with whole-second timestamps, so a link of N seconds may
        # live only N - 1: short, but not so short that a busy machine's
        # upload of the fresh link misses it.
        upload_url_ttl_seconds=3,
        download_url_ttl_seconds=4,
        **stack_env(request, stack),
    ).start()
    yield running
    running.stop()


def test_expired_links_are_refused(short_lived: Server) -> None:
    # A fresh link must work while it lives, and every link must be refused
    # once past its own expiry (read from the link): on a busy machine a
    # fixed sleep after the task, or a short link used a moment too late,
    # raced the clock.
    api = make_client(short_lived)
    data = png_bytes(16, 16)
    png = {"content-type": "image/png"}
    stale = api.upload_url("late.png", "image/png", len(data))
    links: list[dict[str, Any]] = []

    def sign_upload() -> str:
        links.append(api.upload_url("ok.png", "image/png", len(data)))
        return str(links[-1]["uploadURL"])

    _while_fresh(sign_upload, lambda url: httpx.put(url, content=data, headers=png))
    task = api.start([file_entry(links[-1])], model="quick-clear-4x", scale="2").json()["data"]
    api.wait(task["taskId"])
    downloads: list[str] = []

    def sign_download() -> str:
        downloads.append(api.status(task["taskId"])["files"][0]["downloadLink"])
        return downloads[-1]

    _while_fresh(sign_download, httpx.get)
    download = downloads[-1]
    _wait_until_expired(stale["uploadURL"], download)
    late = httpx.put(stale["uploadURL"], content=data, headers=png)
    expired = httpx.get(download)
    if on_s3(short_lived):  # the store answers itself, in its own XML: 403 for both
        assert (late.status_code, expired.status_code) == (403, 403)
    else:
        assert _status(late) == (403, "FORBIDDEN")
        assert "call get-upload-url for a new one" in late.json()["message"]
        assert _status(expired) == (410, "GONE")
    # a new status call signs new links
    _while_fresh(lambda: api.status(task["taskId"])["files"][0]["downloadLink"], httpx.get)


def test_signatures_never_reach_the_access_log(client: ApiClient, server: Server) -> None:
    link = client.upload("logged.png", png_bytes())
    query = dict(parse_qsl(urlsplit(link["uploadURL"]).query))
    signature = query.get("signature") or query["X-Amz-Signature"]  # local store, or S3
    if "signature" in query:  # the local store answers the PUT itself, and logs it
        assert "/objects/uploads/" in server.log()
    assert signature not in server.log()
    assert client.http.headers["X-API-Key"] not in server.log()


def test_retention_sweeps_results_and_originals(
    request: pytest.FixtureRequest, stack: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Each object is checked while it must still be there, and then awaited
    # until swept: an original's retention runs from its upload, so checking
    # it after the task (whose first run loads the model) raced the sweeper
    # on a slow machine (CI, session 5).
    server = Server(
        tmp_path_factory.mktemp("retention") / "data",
        workers=1,
        result_retention_seconds=2,
        upload_retention_seconds=3,
        sweep_interval_seconds=0.3,
        **stack_env(request, stack),
    ).start()
    try:
        api = make_client(server)
        storage = server.ctx.storage
        account = authenticate(server.ctx, api.http.headers["X-API-Key"]).account_id
        for _ in range(5):
            # The original's retention (3 s) runs from its link's signing: it
            # must be there, and be accepted, until then. A machine so busy
            # that the upload and start-task took longer tries a new one.
            signed = time.time()
            link = api.upload("keep.png", png_bytes(16, 16))
            uploaded = f"uploads/{account}/{link['fileName']}"
            if storage.size(uploaded) is None:
                assert time.time() >= signed + 3, "the original was swept before its time"
                continue
            started = api.start([file_entry(link)], model="quick-clear-4x", scale="2")
            if started.status_code == 200:
                break
            assert time.time() >= signed + 3, started.text
        else:
            raise AssertionError("5 uploads in a row outlived their retention before the start")
        task = started.json()["data"]
        done = api.wait(task["taskId"])
        entry = done["files"][0]
        assert entry["expiresAt"] - entry["createdAt"] == 2000
        # The result must be there until its expiry (a check that comes later,
        # on a busy machine, can no longer tell).
        if storage.size(entry["path"]) is None:
            assert time.time() * 1000 >= entry["expiresAt"], "the result was swept before its time"
        deadline = time.monotonic() + 30
        while storage.size(entry["path"]) is not None or storage.size(uploaded) is not None:
            assert time.monotonic() < deadline, "the sweeper never deleted the result or original"
            time.sleep(0.2)
        assert time.time() * 1000 >= entry["expiresAt"]  # not swept before its time
        # Past its expiry the file is listed without links: none would work.
        again = api.status(task["taskId"])["files"][0]
        assert "downloadLink" not in again and "thumbnailLink" not in again
        assert (again["path"], again["expiresAt"]) == (entry["path"], entry["expiresAt"])
        if "downloadLink" in entry:  # signed before the expiry (a busy machine may miss it)
            _wait_until_expired(entry["downloadLink"])
            expired = httpx.get(entry["downloadLink"])
            if on_s3(server):  # the store's own answer to an expired link
                assert expired.status_code == 403
            else:
                assert _status(expired) == (410, "GONE")
        refused = api.start([file_entry(link)], model="quick-clear-4x")
        assert refused.status_code == 400  # the original is gone
    finally:
        server.stop()
