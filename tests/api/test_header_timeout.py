"""A connection that never finishes its request headers is closed (serve's
uvicorn protocol), on a fresh connection and on a kept-alive one; a prompt
request on the same server is answered as usual."""

from __future__ import annotations

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


async def _app(scope: dict, receive: object, send: object) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):  # type: ignore[operator]
        pass
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


def test_a_slow_body_after_prompt_headers_is_not_cut(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
        time.sleep(1.0)  # twice the header deadline
        sock.sendall(b"cd")
        sock.settimeout(5)
        assert b"200" in sock.recv(4096)
