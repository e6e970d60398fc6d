"""A connection that never finishes its request headers is closed (serve's
uvicorn protocol), on a fresh connection and on a kept-alive one, and so is
one whose body stops arriving; a slow but steady body, a slow answer and a
prompt request on the same server are served as usual."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from support.server import free_port
from upscayl_cloud.api.protocol import HeaderTimeoutH11Protocol


class _Quick(HeaderTimeoutH11Protocol):
    header_timeout = 0.5
    body_idle_timeout = 0.5


#: What the app's receive() returned last, per request path.
LAST_MESSAGE: dict[str, str] = {}


async def _app(scope: dict, receive: object, send: object) -> None:
    if scope["type"] != "http":
        return
    while True:
        message = await receive()  # type: ignore[operator]
        LAST_MESSAGE[scope["path"]] = message["type"]
        if message["type"] != "http.request" or not message.get("more_body"):
            break
    if message["type"] == "http.disconnect":
        return
    if scope["path"] == "/slow-answer":
        await asyncio.sleep(1.5)  # three idle deadlines: the client waits on us
    await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": b"ok"})  # type: ignore[operator]


@pytest.fixture
def port() -> Iterator[int]:
    number = free_port()
    config = uvicorn.Config(_app, host="127.0.0.1", port=number, http=_Quick, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield number
    server.should_exit = True
    thread.join(timeout=10)


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
        return True
    except TimeoutError:
        return False


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
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
        for byte in b"abcde":  # 1.2 s in all, more than either deadline
            time.sleep(0.3)
            sock.sendall(bytes([byte]))
        sock.settimeout(5)
        assert b"200" in sock.recv(4096)


def test_a_body_that_stops_arriving_is_cut_off(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /stalled HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
        assert _closed_within(sock, 5)
    deadline = time.monotonic() + 5
    while LAST_MESSAGE.get("/stalled") != "http.disconnect":
        assert time.monotonic() < deadline, LAST_MESSAGE
        time.sleep(0.02)


def test_a_slow_answer_is_not_cut(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /slow-answer HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab")
        sock.settimeout(5)
        assert b"200" in sock.recv(4096)
