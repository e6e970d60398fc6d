"""Heavy or abusive bodies, through the real app: a huge JSON body is refused
before it is parsed (401 without a key, 400 with one, counted), JSON nested beyond the
parser's stack in start-task's ``files`` is a 400, and a full disk is a 503
in the error shape, not a 500."""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from support.context import new_principal
from support.images import png_bytes
from upscayl_cloud.api.bodylimit import JSON_BODY_LIMIT_BYTES

TASK_ID = "30a89e69-c702-4247-9905-f0a53dfa45ab"


def _chunks(total: int) -> Iterator[bytes]:
    yield b'{"taskId": "'
    for _ in range(total // 65536):
        yield b"a" * 65536
    yield b'"}'


@pytest.mark.parametrize("path", ["/get-task-status", "/get-upscayl-history", "/get-upload-url"])
def test_an_oversized_json_body_is_refused_before_parsing(client: TestClient, path: str) -> None:
    """Refused unread; counted against the key like any refusal, and
    without a valid key a 401, as a body that did parse would be."""
    keyed = {
        "Content-Type": "application/json",
        "X-API-Key": new_principal(client.app.state.ctx)[0],
    }
    body = b'{"taskId": "' + b"a" * (2 * JSON_BODY_LIMIT_BYTES) + b'"}'
    declared = client.post(path, content=body, headers=keyed)
    chunked = client.post(path, content=_chunks(2 * JSON_BODY_LIMIT_BYTES), headers=keyed)
    for response in (declared, chunked):
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "BAD_REQUEST"
        assert "larger than 1024 KiB" in response.json()["message"]
        assert response.headers["X-RateLimit-Limit"] == "100"
    assert declared.headers["X-RateLimit-Remaining"] == "99"
    assert chunked.headers["X-RateLimit-Remaining"] == "98"
    anonymous = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert anonymous.status_code == 401, anonymous.text


def test_a_json_body_under_the_cap_still_works(client: TestClient) -> None:
    key = new_principal(client.app.state.ctx)[0]
    padded = json.dumps({"taskId": TASK_ID, "pad": "x" * (JSON_BODY_LIMIT_BYTES - 200)})
    response = client.post(
        "/get-task-status",
        content=padded,
        headers={"Content-Type": "application/json", "X-API-Key": key},
    )
    assert response.status_code == 404, response.text


@pytest.mark.parametrize("as_file", [False, True])
def test_deeply_nested_files_json_is_a_400(client: TestClient, as_file: bool) -> None:
    key = new_principal(client.app.state.ctx)[0]
    nested = "[" * 100_000 + "]" * 100_000
    part = ("f.json", nested.encode(), "application/json") if as_file else (None, nested)
    response = client.post("/start-task", files={"files": part}, headers={"X-API-Key": key})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "BAD_REQUEST"
    assert "nested" in response.json()["message"]


def _full_disk(*_args: object, **_kwargs: object) -> int:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_is_503_not_500(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = client.app.state.ctx
    key = new_principal(ctx)[0]
    data = png_bytes()
    body = {"originalFileName": "a.png", "fileType": "image/png", "fileSize": len(data)}
    link = client.post("/get-upload-url", json=body, headers={"X-API-Key": key}).json()["data"]
    # A signed PUT writes through write_exact, a direct file through write_stream.
    for write in ("write_exact", "write_stream"):
        monkeypatch.setattr(ctx.storage, write, _full_disk)
    with caplog.at_level(logging.WARNING):
        put = client.put(link["uploadURL"], content=data, headers={"content-type": "image/png"})
        direct = client.post(
            "/start-task",
            files={"file": ("a.png", data, "image/png")},
            headers={"X-API-Key": key},
        )
    for response in (put, direct):
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "SERVICE_UNAVAILABLE"
        assert "storage space" in response.json()["message"]
        assert int(response.headers["Retry-After"]) > 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
