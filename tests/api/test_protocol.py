"""serve's uvicorn protocol against slow clients, over real sockets.

A connection that never finishes its request headers is closed, on a fresh
connection and on a kept-alive one; a body that stops arriving, or trickles
in slower than the minimum rate, is answered 408 in the error shape (no
body for HEAD; a pipelined request's body is timed too) and the connection
closed after the client's further bytes were read and dropped; an answer
nobody reads is dropped; a fast start earns a trickle after it only so
much time. A slow but steady body, bytes that came with the headers, a
slow answer, an app slow to read a large body, a client waiting
for 100 Continue, a body still arriving after an early answer, and an
answer read steadily are served as usual. Through the service's own app, a
trickled upload stores nothing and charges nothing.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from select import select as wait_readable
from typing import Any

import pytest
from sqlalchemy import func, select

from support.context import make_settings, new_principal
from support.images import png_bytes
from support.loopback import read_answer, read_json_answer, serving
from upscayl_cloud.api.app import create_app
from upscayl_cloud.api.protocol import DeadlineH11Protocol
from upscayl_cloud.api.requestid import RequestIdFilter
from upscayl_cloud.db.engine import now_ms
from upscayl_cloud.db.tables import accounts, tasks, uploads
from upscayl_cloud.services.context import Context


class _Quick(DeadlineH11Protocol):
    header_timeout = 0.5
    body_idle_timeout = 0.5
    min_body_rate = 20  # bytes a second
    body_rate_grace = 1.0  # after the idle deadline: each test meets the one it is about
    linger_seconds = 0.5
    write_stall_timeout = 0.5


class _Demanding(_Quick):
    """A rate no client could keep up over a paused read: only the pause
    rule lets a body through while the app is slow to take it."""

    min_body_rate = 1_000_000


#: What the app's receive() returned last, per request path.
LAST_MESSAGE: dict[str, str] = {}


#: What /big answers: more than the kernel's socket buffers on loopback hold.
BIG_ANSWER = 64 * 1024 * 1024


async def _answer(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def _big_answer(send: Any) -> None:
    length = [(b"content-length", str(BIG_ANSWER).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": length})
    chunk = b"x" * (1024 * 1024)
    for _ in range(BIG_ANSWER // len(chunk)):
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _app(scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/early":  # refused before the body is read (a 401, a 402)
        await _answer(send, 401, b"no")
        return
    if scope["path"] == "/big":
        await _big_answer(send)
        return
    if scope["path"] == "/slow-reader":
        await asyncio.sleep(1.5)  # the body waits in uvicorn's buffer, paused
    while True:
        message = await receive()
        LAST_MESSAGE[scope["path"]] = message["type"]
        if message["type"] != "http.request" or not message.get("more_body"):
            break
    if message["type"] == "http.disconnect":
        return
    if scope["path"] == "/slow-answer":
        await asyncio.sleep(1.5)  # three idle deadlines: the client waits on us
    await _answer(send, 200, b"ok")


@pytest.fixture
def port() -> Iterator[int]:
    with serving(_app, http=_Quick) as number:
        yield number


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
        return True
    except TimeoutError:
        return False


def _app_saw_disconnect(path: str) -> None:
    deadline = time.monotonic() + 5
    while LAST_MESSAGE.get(path) != "http.disconnect":
        assert time.monotonic() < deadline, LAST_MESSAGE
        time.sleep(0.02)


def _trickle(sock: socket.socket, seconds: float = 3) -> None:
    """One byte every 0.2 s (5 bytes a second, under every minimum here),
    never pausing long enough for the idle deadline, until the server
    answers: which must be within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        readable, _, _ = wait_readable([sock], [], [], 0.2)
        if readable:
            return
        sock.sendall(b"x")
    pytest.fail(f"a body trickling in was still taken after {seconds} s")


def test_unfinished_headers_are_cut_off(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        assert _closed_within(sock, 5)


def test_a_kept_alive_connection_gets_a_new_deadline(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(5)
        assert b"200" in sock.recv(4096)
        sock.sendall(b"GET / HTTP/1.1\r\n")
        assert _closed_within(sock, 5)


def test_a_slow_but_steady_body_is_not_cut(port: int) -> None:
    """8 bytes every 0.3 s (27 a second, over the minimum), 1.5 s in all:
    longer than every deadline."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n")
        for _ in range(5):
            time.sleep(0.3)
            sock.sendall(b"abcdefgh")
        sock.settimeout(5)
        assert b"200" in sock.recv(4096)


def test_a_body_that_stops_arriving_is_answered_408(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST /stalled HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
        status, body = read_json_answer(sock)
        assert (status, body["error"]) == (408, "REQUEST_TIMEOUT")
        assert body["message"] == "The request body stopped arriving for 0.5 s"
        assert _closed_within(sock, 5)
    _app_saw_disconnect("/stalled")


def test_a_trickling_body_is_answered_408(port: int) -> None:
    """Never idle for 0.5 s, so only the rate stops it: one byte every
    0.2 s would otherwise hold the connection for the whole 1000 bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST /trickle HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        _trickle(sock)
        status, body = read_json_answer(sock)
        assert (status, body["error"]) == (408, "REQUEST_TIMEOUT")
        assert "needs at least 20 on average (after the first 1 s)" in body["message"]
        for _ in range(2):  # what it still sends is read and dropped, not reset
            sock.sendall(b"x")
            time.sleep(0.1)
        assert _closed_within(sock, 5)
    _app_saw_disconnect("/trickle")


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [("https://app.example", b"https://app.example"), ("https://other.example", None)],
)
def test_a_page_on_a_listed_origin_can_read_its_408(origin: str, allowed: bytes | None) -> None:
    protocol = _Quick.for_origins(["https://app.example"])
    head = f"POST / HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\nContent-Length: 9\r\n\r\n"
    with (
        serving(_app, http=protocol) as port,
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
    ):
        sock.sendall(head.encode())
        status, headers, _ = read_answer(sock)
    assert status == 408
    assert headers.get("access-control-allow-origin") == (allowed and allowed.decode())
    assert headers["vary"] == "Origin"


def test_a_pipelined_request_whose_body_never_comes_is_answered_408(port: int) -> None:
    """Its request starts when the first one's answer is done, not when data
    arrives: its body is timed from there."""
    first = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    second = b"POST /pipelined HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(first + second)
        answers = b""
        while answers.count(b"HTTP/1.1 ") < 2 or not answers.endswith(b"}"):
            chunk = sock.recv(4096)
            assert chunk, f"closed without a 408: {answers!r}"
            answers += chunk
        assert answers.startswith(b"HTTP/1.1 200 ")
        assert b"HTTP/1.1 408 " in answers and b"stopped arriving" in answers
        assert _closed_within(sock, 5)


def test_a_head_with_a_trickling_body_gets_a_bodiless_408(
    port: int, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"HEAD /head HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        _trickle(sock)
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408 ") and answer.endswith(b"\r\n\r\n")
        assert _closed_within(sock, 5)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


def test_bytes_sent_with_the_headers_count_toward_the_rate() -> None:
    """1000 bytes with the headers earn 50 s at 20 bytes a second: a 2 s
    stall after them is not too slow."""

    class Patient(_Quick):
        body_idle_timeout = 5

    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n"
    with (
        serving(_app, http=Patient) as port,
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
    ):
        sock.sendall(head + b"a" * 1000)
        time.sleep(2)
        sock.sendall(b"b" * 1000)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")


def test_a_fast_start_buys_a_trickle_only_so_long() -> None:
    """1000 bytes with the headers are 50 s of the minimum rate: counted from
    the body's start alone, they let a trickle of 5 bytes a second after them
    hold the connection for 50 s (with the real rate, 8 MiB sent at once
    held one for over two hours, on any number of connections). Only 1 s of
    credit is kept here, so the trickle is refused within the 3 s
    ``_trickle`` waits, and told why: its average is still high."""

    class Banked(_Quick):
        body_rate_credit = 1.0

    head = b"POST /banked HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
    with (
        serving(_app, http=Banked) as port,
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
    ):
        sock.sendall(head + b"a" * 1000)
        _trickle(sock)
        status, body = read_json_answer(sock)
    assert (status, body["error"]) == (408, "REQUEST_TIMEOUT")
    assert body["message"].startswith("The request body slowed to under 20 bytes a second")
    assert body["message"].endswith("counts what came faster before for at most 1 s")


def test_a_body_answered_early_may_still_finish_then_the_connection_is_reused(
    port: int,
) -> None:
    """The app refuses before reading (a 401); the client, already sending,
    finishes its body at a good rate for 1.5 s, three header deadlines."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 3000\r\n\r\n")
        for _ in range(15):
            time.sleep(0.1)
            sock.sendall(b"y" * 200)  # 2000 bytes a second: fine
        assert sock.recv(4096).startswith(b"HTTP/1.1 401 ")
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")


def test_an_answer_nobody_reads_is_dropped(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(3)  # buffers fill, writing pauses, 0.5 s later: aborted
        received = 0
        try:
            while chunk := sock.recv(1024 * 1024):
                received += len(chunk)
        except ConnectionResetError:
            pass
    assert 0 < received < BIG_ANSWER


def test_an_answer_read_steadily_is_not_dropped(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        received = 0
        while chunk := sock.recv(1024 * 1024):
            received += len(chunk)
            if received > BIG_ANSWER:
                break
            time.sleep(0.001)
    assert received > BIG_ANSWER  # its headers and all of it


def test_an_app_slow_to_read_a_body_is_not_the_clients_fault() -> None:
    """300 kB sent at once while the app sleeps: uvicorn stops reading at
    64 kB, and the paused time is not counted against the client's rate."""
    size = 300_000
    head = f"POST /slow-reader HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n"
    with (
        serving(_app, http=_Demanding) as port,
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
    ):
        sock.sendall(head.encode() + b"x" * size)
        assert b"200" in sock.recv(4096)


def test_a_client_waiting_for_100_continue_is_waiting_on_us(port: int) -> None:
    """It sends its body only once the app asks for it (1.5 s here, three
    idle deadlines): that wait is not the client's."""
    head = "POST /slow-reader HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"{head}Content-Length: 5\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 100 ")
        sock.sendall(b"hello")
        assert b"200" in sock.recv(4096)


def test_a_slow_answer_is_not_cut(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /slow-answer HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab")
        sock.settimeout(5)
        assert b"200" in sock.recv(4096)


# Through the service's app -------------------------------------------------


class _Strict(_Quick):
    """The start of a real upload (its part headers, a PNG's first bytes)
    would buy a trickle at 20 bytes a second many seconds."""

    min_body_rate = 1000


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[int, Context]]:
    app = create_app(make_settings(tmp_path / "data"))
    # Logging as serve sets it up (log_config=None): uvicorn's loggers
    # propagate, so caplog sees the access lines.
    with serving(app, http=_Strict, lifespan="on", log_config=None) as port:
        yield port, app.state.ctx


def test_a_trickled_direct_upload_stores_and_charges_nothing(
    service: tuple[int, Context],
) -> None:
    port, ctx = service
    key, who = new_principal(ctx, credits=5)
    boundary = "trickled"
    start = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="a.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode() + png_bytes()[:64]
    head = (
        f"POST /start-task HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        "Content-Length: 100000\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head + start)
        _trickle(sock)
        status, body = read_json_answer(sock)
    assert (status, body["error"]) == (408, "REQUEST_TIMEOUT")
    with ctx.db.begin() as conn:
        account = accounts.c.id == who.account_id
        assert conn.execute(select(accounts.c.credits).where(account)).scalar() == 5
        for table in (tasks, uploads):
            count = select(func.count()).where(table.c.account_id == who.account_id)
            assert conn.execute(count).scalar() == 0


def test_a_408_carries_the_requests_id_in_its_answer_and_log_lines(
    service: tuple[int, Context], caplog: pytest.LogCaptureFixture
) -> None:
    """The 408 is written by the protocol, not the app: it had no
    X-Request-ID, no access line, and its warning showed "-", so a client's
    id for a timed-out upload led nowhere in the logs."""
    port, ctx = service
    key, _ = new_principal(ctx, credits=5)
    caplog.handler.addFilter(RequestIdFilter())
    head = (
        f"POST /start-task HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\n"
        "X-Request-ID: slow-upload-1\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n"
    ).encode()
    with (
        caplog.at_level(logging.INFO, logger="uvicorn.access"),
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
    ):
        sock.sendall(head + b"--b\r\n")
        _trickle(sock)
        status, headers, _ = read_answer(sock)
    assert (status, headers["x-request-id"]) == (408, "slow-upload-1")
    ours = [r for r in caplog.records if getattr(r, "request_id", "-") == "slow-upload-1"]
    assert any(r.getMessage().startswith("408 for POST /start-task") for r in ours)
    assert any(r.name == "uvicorn.access" and r.getMessage().endswith(" 408") for r in ours)


def test_a_trickled_signed_put_stores_nothing(service: tuple[int, Context]) -> None:
    port, ctx = service
    object_key = "uploads/acct/trickled.png"
    link = ctx.storage.presign_put(
        f"http://127.0.0.1:{port}", object_key, "image/png", 100_000, now_ms() + 60_000
    )
    target = link.split(str(port), 1)[1]
    head = (
        f"PUT {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
        "Content-Length: 100000\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head + png_bytes()[:64])
        _trickle(sock)
        status, body = read_json_answer(sock)
    assert (status, body["error"]) == (408, "REQUEST_TIMEOUT")
    deadline = time.monotonic() + 5  # the app drops its partial file once told
    while ctx.storage.size(object_key) is not None:
        assert time.monotonic() < deadline, "the partial upload was kept"
        time.sleep(0.05)


@pytest.mark.parametrize(
    "head",
    [
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    ],
)
def test_a_request_that_is_not_http_gets_the_error_shape(port: int, head: bytes) -> None:
    """uvicorn answered these in plain text."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        status, body = read_json_answer(sock)
        assert (status, body["error"]) == (400, "BAD_REQUEST")
        assert body["message"].startswith("The request is not valid HTTP/1.1")
        assert _closed_within(sock, 5)


def test_a_request_that_is_not_http_gets_an_id_its_log_line_shares(
    port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(RequestIdFilter())
    with (
        caplog.at_level(logging.WARNING),
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
    ):
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n")
        status, headers, _ = read_answer(sock)
    assert status == 400 and headers["x-request-id"]
    logged = [r for r in caplog.records if getattr(r, "request_id", "-") == headers["x-request-id"]]
    assert next(r.getMessage() for r in logged).startswith(
        "400 for a malformed request from 127.0.0.1"
    )
