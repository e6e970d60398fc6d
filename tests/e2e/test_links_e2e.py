"""Signed links: tampered ones are refused with 403, expired uploads with 403,
expired downloads with 410; the size cap holds while the body streams."""

from __future__ import annotations

import time
from collections.abc import Iterator
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


@pytest.mark.usefixtures("local_store")
def test_tampered_upload_links_are_403(client: ApiClient) -> None:
    data = png_bytes()
    link = client.upload_url("a.png", "image/png", len(data))
    url = link["uploadURL"]
    png = {"content-type": "image/png"}
    forged = [
        httpx.put(_with(url, signature="0" * 64), content=data, headers=png),
        httpx.put(
            _with(url, expires=str(int(time.time() * 1000) + 10**9)), content=data, headers=png
        ),
        httpx.put(_with(url, length=str(len(data) + 5)), content=data + b"12345", headers=png),
        httpx.put(url.replace("/uploads/", "/results/"), content=data, headers=png),
        httpx.put(url, content=data, headers={"content-type": "image/jpeg"}),
        httpx.put(url, content=data + b"extra", headers=png),
        httpx.get(url),
    ]
    for response in forged:
        assert _status(response) == (403, "FORBIDDEN"), response.request
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
    api = make_client(short_lived)
    data = png_bytes(16, 16)
    stale = api.upload_url("late.png", "image/png", len(data))
    link = api.upload("ok.png", data)
    task = api.start([file_entry(link)], model="quick-clear-4x", scale="2").json()["data"]
    done = api.wait(task["taskId"])
    download = done["files"][0]["downloadLink"]
    assert httpx.get(download).status_code == 200
    time.sleep(4.2)
    late = httpx.put(stale["uploadURL"], content=data, headers={"content-type": "image/png"})
    expired = httpx.get(download)
    if on_s3(short_lived):  # the store answers itself, in its own XML: 403 for both
        assert (late.status_code, expired.status_code) == (403, 403)
    else:
        assert _status(late) == (403, "FORBIDDEN")
        assert _status(expired) == (410, "GONE")
    fresh = api.status(task["taskId"])["files"][0]["downloadLink"]
    assert httpx.get(fresh).status_code == 200  # a new status call signs new links


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
        link = api.upload("keep.png", png_bytes(16, 16))
        storage = server.ctx.storage
        uploaded = f"uploads/{authenticate(server.ctx, api.http.headers['X-API-Key']).account_id}"
        uploaded += f"/{link['fileName']}"
        assert storage.size(uploaded) is not None
        task = api.start([file_entry(link)], model="quick-clear-4x", scale="2").json()["data"]
        done = api.wait(task["taskId"])
        entry = done["files"][0]
        assert storage.size(entry["path"]) is not None
        assert entry["expiresAt"] - entry["createdAt"] == 2000
        deadline = time.monotonic() + 30
        while storage.size(entry["path"]) is not None or storage.size(uploaded) is not None:
            assert time.monotonic() < deadline, "the sweeper never deleted the result or original"
            time.sleep(0.2)
        assert time.time() * 1000 >= entry["expiresAt"]  # not swept before its time
        expired = httpx.get(entry["downloadLink"])
        again = api.status(task["taskId"])["files"][0]
        if on_s3(server):  # the store's own answers: expired 403, missing 403/404
            assert expired.status_code == 403
            assert httpx.get(again["downloadLink"]).status_code in (403, 404)
        else:
            assert _status(expired) == (410, "GONE")
            assert httpx.get(again["downloadLink"]).status_code in (404, 410)
        refused = api.start([file_entry(link)], model="quick-clear-4x")
        assert refused.status_code == 400  # the original is gone
    finally:
        server.stop()
