"""``download()`` (sync and async) against links that misbehave: a redirect to
another host, a body that trickles, one that ends short, one that does not
decode, a link that is no usable URL.

The results are real (made by the real server); each misbehaving link is a
stand-in (:class:`~tests.client.relay.StandIn`) for a store or CDN doing
what the real server never does.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.server import Server
from tests.client.helpers import FAST, write_image
from tests.client.relay import Relay, Reply, Seen, StandIn, undecodable
from upscayl_cloud.client import (
    ApiError,
    AsyncClient,
    Client,
    ConnectionFailedError,
    RetryEvent,
    RetryPolicy,
    UpscaylError,
    upload_file,
)
from upscayl_cloud.client.transfer import TransferGuard

#: Two quick tries: a stalled or short transfer is retried like a dropped one.
TWO_TRIES = RetryPolicy(attempts=2, backoff_base=0.01, backoff_cap=0.01)


def _result(client: Client, tmp_path: Path) -> dict[str, Any]:
    """A real finished result's ``ProcessedFile`` (its link, its size)."""
    entry = upload_file(client, write_image(tmp_path / "cat.png", 16, 16))
    task_id = client.start_task([entry], model=FAST, scale=2, save_image_as="png")
    [result] = client.wait(task_id, timeout=60, raise_on_failure=True)["files"]
    return dict(result)


def _redirect(to: str) -> Callable[[BaseHTTPRequestHandler], None]:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", to)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return answer


def _keys(headers: list[dict[str, str]]) -> list[str]:
    return [name for seen in headers for name in seen if name.lower() == "x-api-key"]


def test_a_link_that_redirects_is_followed_and_never_sees_the_key(
    server: Server, api_key: str, client: Client, tmp_path: Path
) -> None:
    """Two stand-in hops (a CDN, then a store) before the real link: each
    302 used to fail the download. No hop is sent ``X-API-Key``."""
    result = _result(client, tmp_path)
    real = client.download(result["downloadLink"], tmp_path / "direct.png").read_bytes()
    with StandIn(_redirect(result["downloadLink"])) as store, StandIn(_redirect(store.url)) as cdn:
        fetched = client.download(cdn.url + "/r.png", tmp_path / "via.png")

        async def fetch() -> Path:
            async with AsyncClient(server.url, api_key) as api:
                return await api.download(cdn.url + "/r.png", tmp_path / "via-async.png")

        fetched_async = asyncio.run(fetch())
        assert len(cdn.headers) == len(store.headers) == 2
        assert _keys(cdn.headers + store.headers) == []
    assert fetched.read_bytes() == fetched_async.read_bytes() == real


def test_api_calls_never_follow_a_redirect(server: Server, api_key: str) -> None:
    """An API call's answer that redirects (the relay's 307, a stand-in) is
    reported, not followed: httpx would carry ``X-API-Key`` to the new host."""
    with StandIn(_redirect("/")) as elsewhere:

        def edit(seen: Seen, forward: Callable[[], httpx.Response]) -> httpx.Response | Reply:
            if seen.path == "/get-upscayl-history":
                return Reply(307, headers={"Location": elsewhere.url + "/history"})
            return forward()

        with (
            Relay(server.url, edit) as relay,
            Client(relay.url, api_key) as api,
            pytest.raises(ApiError) as moved,
        ):
            api.get_history()
        assert moved.value.status_code == 307 and elsewhere.headers == []


def _trickle(handler: BaseHTTPRequestHandler) -> None:
    """A body announced as 1 MB that comes a byte every 0.2 s (for 20 s at most)."""
    handler.send_response(200)
    handler.send_header("Content-Length", str(10**6))
    handler.end_headers()
    ends = time.monotonic() + 20
    try:
        while time.monotonic() < ends:
            handler.wfile.write(b"x")
            handler.wfile.flush()
            time.sleep(0.2)
    except OSError:
        pass  # the client gave up


def test_a_download_that_trickles_fails_as_stalled(tmp_path: Path) -> None:
    """Every read is quick, so httpx's read timeout never fired: the download
    ran for ever. Now a window of the read timeout (1 s here) must bring
    1 KiB a second; this one fails each try, then says why."""
    outcome: list[BaseException] = []
    with StandIn(_trickle) as store:
        with Client("http://127.0.0.1:9", "k", timeout=1, retry=TWO_TRIES) as api:

            def run() -> None:
                try:
                    api.download(store.url + "/r.png", tmp_path / "r.png")
                except UpscaylError as exc:
                    outcome.append(exc)

            began = time.monotonic()
            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            worker.join(12)
            assert not worker.is_alive(), "the trickling download is still running"
            assert time.monotonic() - began < 8

        async def fetch() -> None:
            async with AsyncClient("http://127.0.0.1:9", "k", timeout=1, retry=TWO_TRIES) as api:
                await api.download(store.url + "/r.png", tmp_path / "r.png")

        with pytest.raises(ConnectionFailedError) as stalled_async:
            asyncio.run(asyncio.wait_for(fetch(), 12))
    [stalled] = outcome
    assert isinstance(stalled, ConnectionFailedError)
    for exc in (stalled, stalled_async.value):
        assert "the download stalled" in exc.message and "1024 bytes a second" in exc.message
    assert len(store.headers) == 2 * TWO_TRIES.attempts
    assert not (tmp_path / "r.png").exists()


def test_the_guard_takes_a_slow_transfer_and_refuses_a_stalled_one() -> None:
    """Windows of the read timeout (2 s here), each needing 1 KiB a second:
    1.5 KiB a second passes however long it goes on; 0.5 KiB a second fails
    when its first window closes, not before."""
    now = [0.0]
    request = httpx.Request("GET", "http://store/r.png")
    slow = TransferGuard(httpx.Timeout(2.0), clock=lambda: now[0])
    for _ in range(40):
        now[0] += 0.5
        slow.took(768, request)
    assert slow.received == 40 * 768
    stalled = TransferGuard(httpx.Timeout(2.0), clock=lambda: now[0])
    for _ in range(3):
        now[0] += 0.5
        stalled.took(256, request)
    now[0] += 0.5
    with pytest.raises(httpx.ReadTimeout, match="1024 bytes in 2 s"):
        stalled.took(256, request)


def _half_of(data: bytes) -> Callable[[BaseHTTPRequestHandler], None]:
    """Half of ``data``, then the connection closes (no ``Content-Length``)."""

    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.end_headers()
        handler.wfile.write(data[: len(data) // 2])
        handler.close_connection = True

    return answer


def test_a_body_shorter_than_the_size_given_is_no_result(
    server: Server, api_key: str, client: Client, tmp_path: Path
) -> None:
    """A body cut off without a ``Content-Length`` looks complete to httpx.
    ``size`` (the task's ``finalFileSize``: this server's result size) says
    it is not; without a size there is nothing to tell it by."""
    result = _result(client, tmp_path)
    real = client.download(result["downloadLink"], tmp_path / "whole.png").read_bytes()
    assert result["finalFileSize"] == len(real)
    dest = tmp_path / "short.png"
    with (
        StandIn(_half_of(real)) as store,
        Client(server.url, api_key, retry=TWO_TRIES) as api,
    ):
        with pytest.raises(ConnectionFailedError) as short:
            api.download(store.url + "/r.png", dest, size=len(real))
        assert not dest.exists()

        async def fetch() -> None:
            async with AsyncClient(server.url, api_key, retry=TWO_TRIES) as aapi:
                await aapi.download(store.url + "/r.png", dest, size=len(real))

        with pytest.raises(ConnectionFailedError) as short_async:
            asyncio.run(fetch())
        assert not dest.exists()
        unchecked = api.download(store.url + "/r.png", dest)
    for exc in (short, short_async):
        assert f"ended after {len(real) // 2} bytes" in exc.value.message
        assert f"has {len(real)} (finalFileSize)" in exc.value.message
    assert unchecked.read_bytes() == real[: len(real) // 2]


@pytest.mark.parametrize("link", ["store", "ftp://127.0.0.1/r.png", "http://[::1/r.png"])
def test_an_unusable_answer_or_link_is_a_bad_response_not_retried(
    link: str, tmp_path: Path
) -> None:
    """A body that does not decode (a stand-in store), a link of another
    scheme, a link that is no URL: httpx's own exceptions escaped every
    ``except UpscaylError`` (an unsupported scheme was retried as a lost
    connection, then ridden out as an outage). Asking again cannot help."""
    events: list[RetryEvent] = []
    with StandIn(undecodable) as store:
        url = store.url + "/r.png" if link == "store" else link
        with (
            Client("http://127.0.0.1:9", "k", on_retry=events.append) as api,
            pytest.raises(UpscaylError) as refused,
        ):
            api.download(url, tmp_path / "r.png")

        async def fetch() -> None:
            async with AsyncClient("http://127.0.0.1:9", "k", on_retry=events.append) as aapi:
                await aapi.download(url, tmp_path / "r.png")

        with pytest.raises(UpscaylError) as refused_async:
            asyncio.run(fetch())
        assert len(store.headers) == (2 if link == "store" else 0)
    assert refused.value.code == refused_async.value.code == "BAD_RESPONSE"
    assert refused.value.status_code is None
    assert refused.value.message.startswith("GET download: ")
    assert events == [] and not (tmp_path / "r.png").exists()
