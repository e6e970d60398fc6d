"""Every error code of the spec, provoked for real against a running server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.client import ApiClient, file_entry, make_client
from support.images import png_bytes, png_header_only
from support.server import Server
from support.stacks import on_s3, stack_env


def _error(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error", "message"} and body["message"], body
    return response.status_code, body["error"]


def test_bad_request(client: ApiClient) -> None:
    assert _error(client.post("/get-task-status", {"taskId": "not-a-uuid"})) == (
        400,
        "BAD_REQUEST",
    )
    assert _error(client.start([{"fileName": "nope"}])) == (400, "BAD_REQUEST")
    assert _error(client.post("/get-upscayl-history", {"limit": 500})) == (400, "BAD_REQUEST")
    link = client.upload("x.png", png_header_only(20000, 20000))
    refused = client.start([file_entry(link)])
    assert _error(refused) == (400, "BAD_REQUEST")
    assert link["fileName"] in refused.json()["message"]
    assert "pixels" in refused.json()["message"]


def test_invalid_file_type(client: ApiClient) -> None:
    body = {"originalFileName": "a.gif", "fileType": "image/gif", "fileSize": 10}
    assert _error(client.post("/get-upload-url", body)) == (400, "INVALID_FILE_TYPE")
    assert _error(client.start_direct("a.png", b"GIF89a" + b"\x00" * 50)) == (
        400,
        "INVALID_FILE_TYPE",
    )
    lie = client.upload("lie.png", b"<html>not an image</html>")
    assert _error(client.start([file_entry(lie)])) == (400, "INVALID_FILE_TYPE")


def test_file_size_exceeded(client: ApiClient) -> None:
    body = {"originalFileName": "a.png", "fileType": "image/png", "fileSize": 104857601}
    assert _error(client.post("/get-upload-url", body)) == (400, "FILE_SIZE_EXCEEDED")
    entry = {"fileName": "x", "fileType": "image/png", "fileSize": 104857601}
    assert _error(client.start([entry])) == (400, "FILE_SIZE_EXCEEDED")


def test_missing_required_fields(client: ApiClient) -> None:
    response = client.post("/get-upload-url", {"fileType": "image/png", "fileSize": 1})
    assert _error(response) == (400, "MISSING_REQUIRED_FIELDS")
    assert "originalFileName" in response.json()["message"]
    assert _error(client.start(None, model="quick-clear-4x")) == (400, "MISSING_REQUIRED_FIELDS")
    assert _error(client.post("/complete-multipart-upload", {"data": {}})) == (
        400,
        "MISSING_REQUIRED_FIELDS",
    )


def test_unauthorized(server: Server) -> None:
    for key in (None, "uc_not-a-key"):
        anonymous = ApiClient(server.url, key)
        for path in ("/get-upload-url", "/get-task-status", "/get-upscayl-history"):
            assert _error(anonymous.post(path, {})) == (401, "UNAUTHORIZED")
        assert _error(anonymous.start_direct("a.png", png_bytes())) == (401, "UNAUTHORIZED")


def test_not_found(client: ApiClient) -> None:
    missing = {"taskId": "00000000-0000-4000-8000-000000000000"}
    assert _error(client.post("/get-task-status", missing)) == (404, "NOT_FOUND")
    assert _error(client.http.get("/no-such-route")) == (404, "NOT_FOUND")


def test_insufficient_credits(server: Server) -> None:
    poor = make_client(server, credits=1)
    links = [poor.upload(f"{i}.png", png_bytes()) for i in range(2)]
    refused = poor.start([file_entry(link) for link in links], model="quick-clear-4x")
    assert _error(refused) == (402, "INSUFFICIENT_CREDITS")
    assert poor.post("/get-upscayl-history", {}).json()["pagination"]["total"] == 0


def test_multipart_completion_refusals_are_400(client: ApiClient) -> None:
    data = png_bytes(8, 8, padding=6 * 1024 * 1024)
    link = client.upload_url("m.png", "image/png", len(data), multipart=True)
    etags = []
    for part in link["parts"]:
        start = (part["partNumber"] - 1) * link["partSize"]
        put = httpx.put(part["uploadURL"], content=data[start : start + link["partSize"]])
        etags.append(put.headers["ETag"])

    def complete(parts: list[dict]) -> httpx.Response:
        body = {"uploadId": link["uploadId"], "key": link["key"], "parts": parts}
        return client.post("/complete-multipart-upload", {"data": body})

    wrong_order = [{"PartNumber": 2, "ETag": etags[1]}, {"PartNumber": 1, "ETag": etags[0]}]
    assert "ascending" in complete(wrong_order).json()["message"]
    wrong_etag = [{"PartNumber": 1, "ETag": '"deadbeef"'}, {"PartNumber": 2, "ETag": etags[1]}]
    assert "ETag" in complete(wrong_etag).json()["message"]
    unknown = {"uploadId": "abc", "key": "uploads/x", "parts": [{"PartNumber": 1, "ETag": "x"}]}
    refused = client.post("/complete-multipart-upload", unknown)
    assert _error(refused) == (400, "BAD_REQUEST")  # the spec gives this operation no 404
    assert "No such multipart upload" in refused.json()["message"]
    only_last = [{"PartNumber": 2, "ETag": etags[1]}]
    assert _error(complete(only_last)) == (400, "BAD_REQUEST")  # size differs from declared


@pytest.fixture(scope="module")
def strict_server(
    request: pytest.FixtureRequest, stack: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """On both stacks: the limit's window lives in memory or in Redis."""
    running = Server(
        tmp_path_factory.mktemp("strict") / "data",
        workers=0,
        rate_limits='{"get-upscayl-history": "3/2 seconds"}',
        **stack_env(request, stack),
    ).start()
    yield running
    running.stop()


def test_rate_limit_reached_and_reset(strict_server: Server) -> None:
    import time

    for _ in range(5):
        # The 4th call must be refused if it comes within the 2 s window of
        # the first; a busy machine that took longer tries a fresh account.
        api = make_client(strict_server)
        began = time.monotonic()
        assert [api.post("/get-upscayl-history").status_code for _ in range(3)] == [200] * 3
        refused = api.post("/get-upscayl-history")
        if refused.status_code == 429 or time.monotonic() - began < 2:
            break
    assert _error(refused) == (429, "RATE_LIMIT_EXCEEDED")
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 2
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert "RateLimit" in refused.headers and "RateLimit-Policy" in refused.headers
    time.sleep(retry_after + 0.2)
    assert api.post("/get-upscayl-history").status_code == 200


def test_internal_server_error(strict_server: Server) -> None:
    """A storage folder that cannot be written (a file where a folder must be)."""
    if on_s3(strict_server):
        pytest.skip("breaks the local store's folder")
    api = make_client(strict_server)
    uploads: Path = strict_server.data_dir / "objects" / "uploads"
    assert not uploads.exists()  # nothing uploaded to this server yet
    uploads.write_bytes(b"a file where the uploads folder must be")
    tracebacks = strict_server.log().count("Traceback (most recent call last)")
    try:
        response = api.start_direct("a.png", png_bytes())
        assert _error(response) == (500, "INTERNAL_SERVER_ERROR")
        assert "Traceback" not in response.text
        # Logged once, with its request: not a second time by uvicorn.
        log = strict_server.log()
        assert log.count("Traceback (most recent call last)") == tracebacks + 1
        # ...and tied to its answer by the request id.
        request_id = response.headers["X-Request-ID"]
        assert f"[{request_id}] unhandled error on POST /start-task" in log
    finally:
        uploads.unlink()


def test_a_jpeg_of_thousands_of_scans_fails_its_task_uncharged(client: ApiClient) -> None:
    """A progressive JPEG of 2,000 'end of block' scans: a few kilobytes that
    would cost libjpeg a pass over the image per scan. Its header is sound, so
    the API takes it; the worker refuses it before decoding."""

    def segment(marker: int, body: bytes) -> bytes:
        return bytes([0xFF, marker]) + len(body + b"..").to_bytes(2, "big") + body

    one_code = b"\x01" + b"\x00" * 15
    frame = b"\x08" + (16).to_bytes(2, "big") * 2 + b"\x01\x01\x11\x00"
    jpeg = (
        b"\xff\xd8"
        + segment(0xDB, b"\x00" + b"\x01" * 64)
        + segment(0xC2, frame)
        + segment(0xC4, b"\x00" + one_code + b"\x00")
        + segment(0xC4, b"\x10" + one_code + b"\x00")
        + segment(0xDA, b"\x01\x01\x00\x00\x00\x00")
        + b"\x0f"
        + (segment(0xDA, b"\x01\x01\x00\x01\x3f\x00") + b"\x0f") * 2000
        + b"\xff\xd9"
    )
    link = client.upload("scans.jpg", jpeg, "image/jpeg")
    started = client.start([file_entry(link)], model="quick-clear-4x", scale="2")
    assert started.status_code == 200, started.text
    done = client.wait(started.json()["data"]["taskId"])
    assert done["status"] == "failed" and done["deductedCredits"] == 0
    assert "more than 500 scans" in done["error"]
