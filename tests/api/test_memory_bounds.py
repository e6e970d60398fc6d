"""What a request whose body never finishes makes the server hold, measured.

A client may open many connections and leave each request's body
unfinished: the slow-body rule (api/protocol.py) only asks for a kilobyte a
second, and one signed PUT link may be used by any number of connections at
once. So what a request keeps in memory while its body is on its way must
be small whatever the client sent: a signed PUT keeps at most
``routes/objects.SPOOL_BYTES`` (64 KiB) of its body in memory, the rest in
a temporary file,
and start-task's form refuses a part past its small budget as the bytes
come, instead of keeping every field whole until the body ends.

Measured with ``tracemalloc`` through the real app, driven over ASGI in the
test client's event loop: the client hands the app its chunks and then
stalls. What Python allocated since the request began is read at that
moment (and its peak over the request), before the client hangs up. The
chunks themselves are made before the count starts, so only what the app
copies of them is counted.
"""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from fastapi.testclient import TestClient

from support.context import new_principal
from support.images import png_bytes
from upscayl_cloud.storage.local import LINK_PATH

MIB = 1024 * 1024
#: The ASGI messages' size: what uvicorn hands the app at a time, at most.
CHUNK = 64 * 1024
BOUNDARY = "memory-bounds"


@dataclass
class Outcome:
    """The answer to a request whose body stalled, and what it held."""

    status: int
    payload: dict[str, Any]
    #: Chunks the app read (all of them: it waited for more).
    taken: int
    #: Bytes allocated since the request began and still held when the app
    #: had read every chunk; None if it answered before.
    held: int | None
    #: The most allocated at any moment of the request, above its start.
    peak: int


@pytest.fixture
def traced() -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def _stall(client: TestClient, scope: dict[str, Any], chunks: Sequence[bytes]) -> Outcome:
    """Send ``chunks`` of a request's body to the app, then nothing more:
    when it asks for the next one, measure, and hang up."""
    taken = 0
    held: int | None = None
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal taken, held
        if taken < len(chunks):
            taken += 1
            return {"type": "http.request", "body": chunks[taken - 1], "more_body": True}
        if held is None:
            held = tracemalloc.get_traced_memory()[0] - start
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    async def run() -> None:
        await client.app(scope, receive, send)

    tracemalloc.reset_peak()
    start = tracemalloc.get_traced_memory()[0]
    client.portal.call(run)
    peak = tracemalloc.get_traced_memory()[1] - start
    [head] = [m for m in messages if m["type"] == "http.response.start"]
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return Outcome(head["status"], json.loads(body), taken, held, peak)


def _scope(method: str, url: str, headers: dict[str, str]) -> dict[str, Any]:
    parts = urlsplit(url)
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(parts.path),
        "raw_path": parts.path.encode(),
        "query_string": parts.query.encode(),
        "root_path": "",
        "headers": [(b"host", b"testserver")]
        + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }


def _chunks(body: bytes) -> list[bytes]:
    return [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)]


def _upload_link(client: TestClient, size: int) -> str:
    """A signed PUT link for a PNG of ``size`` bytes, of a key with no credit
    (an upload costs none)."""
    key = new_principal(client.app.state.ctx, credits=0)[0]
    body = {"originalFileName": "a.png", "fileType": "image/png", "fileSize": size}
    answer = client.post("/get-upload-url", json=body, headers={"X-API-Key": key})
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]["uploadURL"]


def test_a_stalled_put_holds_a_small_buffer_not_its_body(client: TestClient, traced: None) -> None:
    """4 MiB of an 8 MiB upload, then silence: the body is on disk, and the
    request holds its small buffer (it held all 4 MiB, and would have held
    up to 8; twenty such PUTs on one link held 160 MiB)."""
    size = 8 * MIB
    link = _upload_link(client, size)
    headers = {"content-type": "image/png", "content-length": str(size)}
    sent = _chunks(b"\x89PNG" + b"x" * (4 * MIB - 4))
    outcome = _stall(client, _scope("PUT", link, headers), sent)
    assert outcome.taken == len(sent)  # it read everything, waiting for the rest
    assert outcome.held is not None and outcome.held < MIB, outcome
    assert (outcome.status, outcome.payload["error"]) == (400, "BAD_REQUEST")
    assert "cut off" in outcome.payload["message"]


def test_a_put_larger_than_the_spool_is_stored_whole(client: TestClient) -> None:
    """Past the in-memory buffer the body goes on through the file: what is
    downloaded is what was sent, byte for byte."""
    data = png_bytes(padding=300 * 1024 + 12_345)  # past the 64 KiB buffer
    link = _upload_link(client, len(data))
    put = client.put(link, content=data, headers={"content-type": "image/png"})
    assert put.status_code == 200, put.text
    assert _stored_bytes(client, link) == data


def _stored_bytes(client: TestClient, link: str) -> bytes:
    """The object a PUT link wrote, as the store holds it."""
    path = unquote(urlsplit(link).path)
    key = path[path.index(LINK_PATH) + len(LINK_PATH) :]
    return client.app.state.ctx.storage.path_of(key).read_bytes()


def _part(name: str, data: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"


#: Twenty parts of nearly 1 MiB each (Starlette's limit for one field), the
#: closing boundary never sent: each used to be kept whole, in memory, until
#: the body ended. Each is now refused as soon as it passes its budget.
_FIELD = b"x" * (MIB - 200)


@pytest.mark.parametrize(
    ("name", "filename", "says"),
    [
        ("note", None, "start-task takes no field 'note' (a part of another name is ignored"),
        ("note", "note.txt", "start-task takes no field 'note' (a part of another name is ignored"),
        ("model", None, "model is longer than 1024 bytes; it takes one short value"),
        ("files", None, "files is too large: at most 1024 kB of JSON in all"),
        # A file part each (a browser's Blob): counted in the same budget.
        ("files", "blob", "files is too large: at most 1024 kB of JSON in all"),
    ],
)
def test_a_form_is_refused_at_its_budget_not_kept_whole(
    client: TestClient, traced: None, name: str, filename: str | None, says: str
) -> None:
    """Twenty 1 MiB parts held 20 MiB (sixty, 60 MiB) until the body ended,
    and a body that never ends never got to the checks: each is now refused
    at its budget, as soon as its bytes pass it."""
    key = new_principal(client.app.state.ctx, credits=1)[0]
    headers = {
        "x-api-key": key,
        "content-type": f"multipart/form-data; boundary={BOUNDARY}",
    }
    body = b"".join(_part(name, _FIELD, filename) for _ in range(20))
    sent = _chunks(body)
    outcome = _stall(client, _scope("POST", "/start-task", headers), sent)
    assert (outcome.status, outcome.payload["error"]) == (400, "BAD_REQUEST"), outcome
    # At most a few MiB of the 20 sent, answered without the rest of the body.
    assert outcome.peak < 4 * MIB, outcome
    assert outcome.held is None and outcome.taken < len(sent) // 4, outcome
    assert outcome.payload["message"].startswith(says), outcome.payload
