"""Retries: a real 429 (tight limits on a second server) honoured, connection
failures retried, and start-task never repeated once the server may have it."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from support.context import new_principal
from support.server import Server, free_port
from tests.client.helpers import FAST, QUICK_RETRY, image_bytes
from tests.client.relay import Relay, Reply, Seen
from upscayl_cloud.client import (
    ApiError,
    AsyncClient,
    Client,
    ConnectionFailedError,
    RateLimitedError,
    RetryEvent,
    RetryPolicy,
    StartUncertainError,
)

TIGHT = json.dumps({"get-upload-url": "1 per 2 seconds", "start-task": "1 per 2 seconds"})


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("limited") / "data", workers=0, rate_limits=TIGHT)
    yield running.start()
    running.stop()


def test_429_waits_for_retry_after(limited_server: Server) -> None:
    events: list[RetryEvent] = []
    key = new_principal(limited_server.ctx, credits=5)[0]
    with Client(limited_server.url, key, on_retry=events.append) as api:
        api.get_upload_url("a.png", "image/png", 10)
        began = time.monotonic()
        assert api.get_upload_url("b.png", "image/png", 10)["fileName"].endswith("b.png")
        waited = time.monotonic() - began
        # start-task is not idempotent, but a 429 was refused before any work: retried.
        api.start_task(file=("a.png", image_bytes(16, 16)), model=FAST)
        api.start_task(file=("b.png", image_bytes(16, 16)), model=FAST)
    assert [(e.status_code, e.reason) for e in events][:1] == [(429, "RATE_LIMIT_EXCEEDED")]
    assert {e.path for e in events} == {"/get-upload-url", "/start-task"}
    assert events[0].delay >= 1 and waited >= 1


def test_429_longer_than_we_wait_is_raised(limited_server: Server) -> None:
    key = new_principal(limited_server.ctx, credits=5)[0]
    impatient = RetryPolicy(max_retry_after=0.5)
    with Client(limited_server.url, key, retry=impatient) as api:
        api.get_upload_url("a.png", "image/png", 10)
        with pytest.raises(RateLimitedError) as refused:
            api.get_upload_url("b.png", "image/png", 10)
    assert refused.value.code == "RATE_LIMIT_EXCEEDED" and refused.value.status_code == 429
    assert refused.value.retry_after is not None and refused.value.retry_after >= 1
    assert "Try again" in refused.value.message


def test_connection_refused_is_retried_then_raised(tmp_path: Path) -> None:
    events: list[RetryEvent] = []
    dead = f"http://127.0.0.1:{free_port()}"
    with Client(dead, "k", retry=QUICK_RETRY, on_retry=events.append) as api:
        with pytest.raises(ConnectionFailedError) as failed:
            api.get_task_status("30a89e69-c702-4247-9905-f0a53dfa45ab")
        assert failed.value.code == "CONNECTION_ERROR"
        # Never connected, so never accepted: even start-task is retried.
        with pytest.raises(ConnectionFailedError):
            api.start_task(file=("a.png", b"\x89PNG"))
    assert len(events) == 2 * (QUICK_RETRY.attempts - 1)


class _Misbehaving(BaseHTTPRequestHandler):
    """Reads each request, then answers 500 (or 408) or hangs up without answering."""

    mode = "500"
    hits: list[str] = []  # noqa: RUF012 (one server per test module run)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.hits.append(self.path)
        if self.mode == "drop":
            self.close_connection = True
            return
        status = 408 if self.mode == "408" else 500
        code = "REQUEST_TIMEOUT" if status == 408 else "INTERNAL_SERVER_ERROR"
        body = b'{"error": "%s", "message": "boom"}' % code.encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def misbehaving() -> Iterator[type[_Misbehaving]]:
    handler = type("Handler", (_Misbehaving,), {"hits": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{httpd.server_address[1]}"  # type: ignore[attr-defined]
    yield handler
    httpd.shutdown()
    httpd.server_close()


def test_5xx_retried_only_when_idempotent(misbehaving: type[_Misbehaving]) -> None:
    with Client(misbehaving.url, "k", retry=QUICK_RETRY) as api:  # type: ignore[attr-defined]
        with pytest.raises(ApiError) as status_error:
            api.get_task_status("t")
        assert len(misbehaving.hits) == QUICK_RETRY.attempts
        assert (status_error.value.code, status_error.value.message) == (
            "INTERNAL_SERVER_ERROR",
            "boom",
        )
        misbehaving.hits.clear()
        with pytest.raises(ApiError):
            api.start_task(file=("a.png", b"x"))
        assert misbehaving.hits == ["/start-task"]


def test_408_is_retried_even_for_start_task(misbehaving: type[_Misbehaving]) -> None:
    """A 408 says the request never got past its body: repeating it is safe."""
    misbehaving.mode = "408"
    url = misbehaving.url  # type: ignore[attr-defined]
    with Client(url, "k", retry=QUICK_RETRY) as api, pytest.raises(ApiError) as timed_out:
        api.start_task(file=("a.png", b"x"))
    assert timed_out.value.code == "REQUEST_TIMEOUT"
    assert misbehaving.hits == ["/start-task"] * QUICK_RETRY.attempts


def test_dropped_start_is_not_repeated(misbehaving: type[_Misbehaving]) -> None:
    misbehaving.mode = "drop"
    with Client(misbehaving.url, "k", retry=QUICK_RETRY) as api:  # type: ignore[attr-defined]
        with pytest.raises(StartUncertainError) as uncertain:
            api.start_task(file=("a.png", b"x"))
        assert uncertain.value.code == "START_UNCERTAIN" and misbehaving.hits == ["/start-task"]
        with pytest.raises(ConnectionFailedError):
            api.get_history()
        assert misbehaving.hits.count("/get-upscayl-history") == QUICK_RETRY.attempts


def test_async_client_follows_the_same_rules(misbehaving: type[_Misbehaving]) -> None:
    events: list[RetryEvent] = []

    async def flow() -> None:
        url = misbehaving.url  # type: ignore[attr-defined]
        async with AsyncClient(url, "k", retry=QUICK_RETRY, on_retry=events.append) as api:
            with pytest.raises(ApiError):
                await api.get_task_status("t")
            with pytest.raises(ApiError):
                await api.start_task(file=("a.png", b"x"))
            misbehaving.mode = "drop"
            with pytest.raises(StartUncertainError):
                await api.start_task(file=("a.png", b"x"))

    asyncio.run(flow())
    assert misbehaving.hits.count("/get-task-status") == QUICK_RETRY.attempts
    assert misbehaving.hits.count("/start-task") == 2
    assert len(events) == QUICK_RETRY.attempts - 1


def test_a_start_answer_that_does_not_decode_is_uncertain(server: Server, api_key: str) -> None:
    """start-task reaches the real server (the task is created, and charged);
    the relay garbles the answer's gzip (a stand-in: ours never does).
    httpx's ``DecodingError`` escaped unwrapped; a retry would have started
    the task twice. It is :class:`StartUncertainError`, sent once."""
    starts: list[int] = []

    def edit(seen: Seen, forward: Callable[[], httpx.Response]) -> httpx.Response | Reply:
        answer = forward()
        if seen.path != "/start-task":
            return answer
        starts.append(answer.status_code)
        return Reply(200, b"not gzip", {"Content-Encoding": "gzip"})

    async def start_async(url: str) -> None:
        async with AsyncClient(url, api_key, retry=QUICK_RETRY) as api:
            await api.start_task(file=("b.png", image_bytes(16, 16)), model=FAST)

    with Relay(server.url, edit) as relay, Client(relay.url, api_key, retry=QUICK_RETRY) as api:
        with pytest.raises(StartUncertainError) as uncertain:
            api.start_task(file=("a.png", image_bytes(16, 16)), model=FAST)
        with pytest.raises(StartUncertainError) as uncertain_async:
            asyncio.run(start_async(relay.url))
        assert api.get_history()["pagination"]["total"] == 2  # both were created
    assert starts == [200, 200]
    for exc in (uncertain.value, uncertain_async.value):
        assert exc.code == "START_UNCERTAIN" and "could not be read" in exc.message
