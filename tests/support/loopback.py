"""An ASGI app under a real uvicorn on a free loopback port, and raw-socket
reading of its answers: for what only real HTTP shows (bodies sent in
pieces, connections cut, answers that come before the body)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from support.server import free_port


@contextmanager
def serving(app: Any, http: Any = "h11", lifespan: str = "auto", **options: Any) -> Iterator[int]:
    """Serve ``app`` (with ``http``, a uvicorn protocol class or name, and
    further ``uvicorn.Config`` options) and yield its port; stopped on exit."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http=http,
        log_level="warning",
        lifespan=lifespan,
        **options,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-cased names) and body of one response
    (``Content-Length`` framed)."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection without an answer"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
    length = int(fields["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection mid-answer"
        body += chunk
    return int(lines[0].split()[1]), fields, body


def read_json_answer(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    status, _, body = read_answer(sock)
    return status, json.loads(body)
