"""A client that hangs up halfway through a signed upload, against a real
``serve``: nothing is stored, the upload can still be made afterwards, and
the server logs one line, not a traceback and a 500."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from support.client import ApiClient
from support.images import png_bytes
from support.server import Server
from upscayl_cloud.services.keys import authenticate


@pytest.mark.usefixtures("local_store")
def test_an_upload_cut_off_midway_stores_nothing(client: ApiClient, server: Server) -> None:
    data = png_bytes(64, 64)
    link = client.upload_url("cut.png", "image/png", len(data))
    url = urlsplit(link["uploadURL"])
    head = (
        f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"Content-Type: image/png\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.sendall(head.encode() + data[: len(data) // 2])
        time.sleep(0.3)  # the server is reading the body when the client goes
    deadline = time.monotonic() + 20
    while "client disconnected during PUT" not in server.log():
        assert time.monotonic() < deadline, server.log()[-2000:]
        time.sleep(0.05)
    assert "Traceback" not in server.log() and "unhandled error" not in server.log()
    account = authenticate(server.ctx, client.http.headers["X-API-Key"]).account_id
    assert server.ctx.storage.size(f"uploads/{account}/{link['fileName']}") is None
    whole = httpx.put(link["uploadURL"], content=data, headers={"Content-Type": "image/png"})
    assert whole.status_code == 200, whole.text
