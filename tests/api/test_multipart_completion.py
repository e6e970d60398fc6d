"""A repeated complete-multipart-upload, through the real app: a client that
lost the first answer (a 503 after the parts were joined: the size read that
follows the join timed out) and retries gets the success the first call had,
not a 400 "already completed"."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from support.context import new_principal
from upscayl_cloud.storage.base import StorageUnavailableError

DATA = b"0123456789"


def _one_part_uploaded(client: TestClient) -> tuple[dict[str, str], dict, dict, str]:
    """A multipart upload of DATA with its one part sent: the caller's
    headers, get-upload-url's answer, its part, and the part's ETag."""
    headers = {"X-API-Key": new_principal(client.app.state.ctx)[0]}
    body = {"originalFileName": "a.png", "fileType": "image/png", "fileSize": len(DATA),
            "multipart": True}  # fmt: skip
    link = client.post("/get-upload-url", json=body, headers=headers).json()["data"]
    [part] = link["parts"]
    put = client.put(part["uploadURL"], content=DATA)
    assert put.status_code == 200, put.text
    return headers, link, part, put.headers["ETag"]


def test_a_completion_repeated_after_a_lost_answer_succeeds(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers, link, _part, etag = _one_part_uploaded(client)
    parts = [{"PartNumber": 1, "ETag": etag}]
    done = {"data": {"uploadId": link["uploadId"], "key": link["key"], "parts": parts}}

    store = client.app.state.ctx.storage
    real_complete = store.complete_multipart

    def joined_then_unavailable(*args: object) -> int:
        real_complete(*args)
        raise StorageUnavailableError("size read timed out")

    monkeypatch.setattr(store, "complete_multipart", joined_then_unavailable)
    lost = client.post("/complete-multipart-upload", json=done, headers=headers)
    assert lost.status_code == 503, lost.text
    monkeypatch.undo()

    for _ in range(2):
        again = client.post("/complete-multipart-upload", json=done, headers=headers)
        assert again.status_code == 200, again.text
        assert again.json() == {"status": "success", "data": {"status": "success"}}
    assert store.size(link["key"]) == len(DATA)


def test_parts_handed_back_in_get_upload_urls_casing_are_understood(client: TestClient) -> None:
    """get-upload-url lists ``partNumber``; a client returning that, with the
    ``etag`` it read, completes as one using the spec's S3 casing does."""
    headers, link, part, etag = _one_part_uploaded(client)
    parts = [{"partNumber": part["partNumber"], "etag": etag}]
    done = {"data": {"uploadId": link["uploadId"], "key": link["key"], "parts": parts}}
    answer = client.post("/complete-multipart-upload", json=done, headers=headers)
    assert answer.status_code == 200, answer.text
    assert client.app.state.ctx.storage.size(link["key"]) == len(DATA)
    # A part with neither spelling is still named in the spec's casing.
    done["data"]["parts"] = [{"number": 1}]
    missing = client.post("/complete-multipart-upload", json=done, headers=headers).json()
    assert missing["error"] == "MISSING_REQUIRED_FIELDS"
    assert "data.parts.0.PartNumber" in missing["message"]
    assert "data.parts.0.ETag" in missing["message"]


def test_a_completion_missing_a_part_is_refused_and_the_upload_kept(client: TestClient) -> None:
    """Refused before anything is joined: the store would drop the unlisted
    part, and the short object would have to be deleted with the upload."""
    headers = {"X-API-Key": new_principal(client.app.state.ctx)[0]}
    part_bytes = client.app.state.ctx.settings.multipart_part_bytes
    data = b"p" * part_bytes + b"end"
    body = {"originalFileName": "a.png", "fileType": "image/png", "fileSize": len(data),
            "multipart": True}  # fmt: skip
    link = client.post("/get-upload-url", json=body, headers=headers).json()["data"]
    etags = []
    for part in link["parts"]:
        start = (part["partNumber"] - 1) * part_bytes
        put = client.put(part["uploadURL"], content=data[start : start + part_bytes])
        assert put.status_code == 200, put.text
        etags.append({"PartNumber": part["partNumber"], "ETag": put.headers["ETag"]})
    assert len(etags) == 2

    def complete(parts: list[dict]) -> dict:
        done = {"data": {"uploadId": link["uploadId"], "key": link["key"], "parts": parts}}
        return client.post("/complete-multipart-upload", json=done, headers=headers).json()

    short = complete(etags[:1])
    assert short["error"] == "BAD_REQUEST"
    assert short["message"] == (
        "Cannot complete multipart upload: list all 2 parts; missing: part 2"
    )
    extra = complete([*etags, {"PartNumber": 3, "ETag": '"0"'}])
    assert extra["message"] == (
        "Cannot complete multipart upload: it has parts 1 to 2, there is no part 3"
    )
    assert complete(etags) == {"status": "success", "data": {"status": "success"}}
    assert client.app.state.ctx.storage.size(link["key"]) == len(data)
    # Repeated once joined, it answers as the first did, whatever it lists.
    assert complete(etags[:1]) == {"status": "success", "data": {"status": "success"}}


def test_a_lone_surrogate_in_a_field_is_a_400_not_a_500(client: TestClient) -> None:
    """JSON can escape half a UTF-16 pair, which no database can store."""
    headers, link, _part, etag = _one_part_uploaded(client)
    parts = [{"PartNumber": 1, "ETag": etag}]
    for field in ("uploadId", "key"):
        done = {"uploadId": link["uploadId"], "key": link["key"], "parts": parts}
        done[field] = "\ud800"
        answer = client.post(
            "/complete-multipart-upload",
            content=json.dumps({"data": done}),  # escaped: "\\ud800", as JSON allows
            headers={**headers, "Content-Type": "application/json"},
        )
        assert answer.status_code == 400, answer.text
        assert "lone surrogate" in answer.json()["message"]
        assert f"data.{field}" in answer.json()["message"]
