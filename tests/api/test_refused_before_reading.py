"""start-task refuses an account that cannot pay for one image before it reads
the body: a direct upload is up to 100 MB, and reading and storing it for a
request that can only be refused would make that work free to ask for. Over
real HTTP, on a real server: the client sends the headers and the start of a
large body, and the 402 comes without the rest."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from support.context import make_settings, new_principal
from support.images import png_bytes
from support.loopback import read_json_answer, serving
from upscayl_cloud.api.app import create_app
from upscayl_cloud.db.tables import uploads
from upscayl_cloud.services.context import Context

BOUNDARY = "refused-before-reading"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[int, Context]]:
    """The service's app under uvicorn on a free loopback port, and its context."""
    app = create_app(make_settings(tmp_path / "data"))
    with serving(app, lifespan="on") as port:
        yield port, app.state.ctx


def _start_of_a_direct_upload(key: str, declared: int) -> bytes:
    """The headers of a start-task with a ``declared``-byte body, and its first bytes."""
    part = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="a.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode() + png_bytes()[:64]
    head = (
        "POST /start-task HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"X-API-Key: {key}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    ).encode()
    return head + part


def test_no_credits_is_402_before_the_body_is_read(served: tuple[int, Context]) -> None:
    port, ctx = served
    key, who = new_principal(ctx, credits=0)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(_start_of_a_direct_upload(key, 50 * 1024 * 1024))
        try:
            status, body = read_json_answer(sock)
        except TimeoutError:
            pytest.fail("no answer until the body arrives: the server is reading it")
    assert (status, body["error"]) == (402, "INSUFFICIENT_CREDITS")
    with ctx.db.begin() as conn:
        count = select(func.count()).where(uploads.c.account_id == who.account_id)
        assert conn.execute(count).scalar() == 0
