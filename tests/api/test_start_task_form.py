"""start-task's form variants, through the real app: ``files`` as one JSON array
part or as one JSON object per repeated part, and a direct ``file``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from support.app import client_for
from support.context import make_settings, new_principal
from support.images import png_bytes
from upscayl_cloud.db.tables import task_files, uploads
from upscayl_cloud.services import tasks as task_service
from upscayl_cloud.storage.base import StorageUnavailableError


def _upload(client: TestClient, key: str, data: bytes) -> dict:
    body = {"originalFileName": "a.png", "fileType": "image/png", "fileSize": len(data)}
    link = client.post("/get-upload-url", json=body, headers={"X-API-Key": key}).json()["data"]
    put = client.put(link["uploadURL"], content=data, headers={"content-type": "image/png"})
    assert put.status_code == 200, put.text
    return {k: link[k] for k in ("fileName", "fileType", "fileSize")}


def _status(client: TestClient, key: str, task_id: str) -> dict:
    body = {"taskId": task_id}
    return client.post("/get-task-status", json=body, headers={"X-API-Key": key}).json()["data"]


def test_files_as_array_or_repeated_parts(client: TestClient) -> None:
    key = new_principal(client.app.state.ctx, credits=10)[0]
    entries = [_upload(client, key, png_bytes()) for _ in range(3)]
    as_array = client.post(
        "/start-task",
        files=[("files", (None, json.dumps(entries[:2]), "application/json"))],
        data={"model": "quick-clear-4x"},
        headers={"X-API-Key": key},
    )
    repeated = client.post(
        "/start-task",
        files=[("files", (None, json.dumps(e), "application/json")) for e in entries],
        headers={"X-API-Key": key},
    )
    as_file_part = client.post(
        "/start-task",
        files=[("files", ("files.json", json.dumps(entries[:1]), "application/json"))],
        headers={"X-API-Key": key},
    )
    for response in (as_array, repeated, as_file_part):
        assert response.status_code == 200, response.text
    first = _status(client, key, as_array.json()["data"]["taskId"])
    assert (first["batchMode"], first["model"], first["status"]) == (
        True,
        "quick-clear-4x",
        "pending",
    )
    second = _status(client, key, repeated.json()["data"]["taskId"])
    assert (second["model"], second["scale"], second["saveImageAs"]) == (
        "upscayl-standard-4x",
        "4",
        "jpg",
    )
    assert _status(client, key, as_file_part.json()["data"]["taskId"])["batchMode"] is False


def test_files_entries_may_each_be_a_file_part(tmp_path: Path) -> None:
    """A browser's ``FormData.append("files", new Blob([json]))`` sends each
    entry as a file part named "blob" (so do ``curl -F files=@entry.json``
    and httpx with a filename): up to the per-task limit of them is one
    batch, where the third used to be refused as "Too many files". One part
    more is refused by the count, as soon as its headers are in; so is a
    second ``file``."""
    with client_for(make_settings(tmp_path, max_files_per_task=3)) as client:
        key = new_principal(client.app.state.ctx, credits=10)[0]
        entries = [_upload(client, key, png_bytes()) for _ in range(3)]
        blobs = [("files", ("blob", json.dumps(e), "application/json")) for e in entries]
        started = client.post("/start-task", files=blobs, headers={"X-API-Key": key})
        assert started.status_code == 200, started.text
        task_id = started.json()["data"]["taskId"]
        assert _status(client, key, task_id)["batchMode"] is True
        with client.app.state.ctx.db.begin() as conn:
            named = select(func.count()).where(task_files.c.task_id == task_id)
            assert conn.execute(named).scalar() == 3
        one_more = client.post("/start-task", files=[*blobs, blobs[0]], headers={"X-API-Key": key})
        assert one_more.json() == {
            "error": "BAD_REQUEST",
            "message": "At most 3 files per task (files was sent in more than 3 parts)",
        }
        image = ("file", ("a.png", png_bytes(), "image/png"))
        two_images = client.post("/start-task", files=[image, image], headers={"X-API-Key": key})
        assert two_images.json() == {
            "error": "BAD_REQUEST",
            "message": "Send one file per task in 'file'; use 'files' for a batch",
        }


def test_each_part_is_judged_by_its_name_as_its_headers_arrive(client: TestClient) -> None:
    """Before any of its bytes are kept: a part that cannot be right is
    refused, naming it. A small part of another name is ignored, as in JSON
    bodies (the spec's form may grow a field, such as its commented-out
    compression; clients send an empty file part to force a multipart
    body); a larger one is refused once it passes 1 KiB."""
    key = new_principal(client.app.state.ctx, credits=10)[0]
    image = ("file", ("a.png", png_bytes(), "image/png"))

    def start(*parts: tuple[str, tuple[str | None, Any, str]]) -> tuple[int, str]:
        answer = client.post("/start-task", files=list(parts), headers={"X-API-Key": key})
        return answer.status_code, answer.json().get("message", "")

    assert start(image, ("compression", (None, "80", "text/plain")))[0] == 200
    assert start(("_", ("", b"", "application/octet-stream"))) == (
        400,
        "Required fields missing: file or files",
    )
    assert start(image, ("image", ("b.png", png_bytes(padding=2000), "image/png"))) == (
        400,
        "start-task takes no field 'image' (a part of another name is ignored only up to "
        "1024 bytes); send the image as 'file', or the uploaded files' JSON as 'files'",
    )
    assert start(image, ("scale", ("scale.txt", "4", "text/plain"))) == (
        400,
        "scale must be a plain form field",
    )
    assert start(("file", (None, "not a file", "text/plain"))) == (
        400,
        "file must be a file part",
    )
    # Part headers, 8 of 4 kB a part at most (python-multipart's limits),
    # are bounded in all too.
    boundary = "judged"
    padding = "".join(f"X-Pad-{i}: {'p' * 4000}\r\n" for i in range(7))
    part = f'--{boundary}\r\nContent-Disposition: form-data; name="note"\r\n{padding}\r\nx\r\n'
    answer = client.post(
        "/start-task",
        content=(part * 6 + f"--{boundary}--\r\n").encode(),
        headers={"X-API-Key": key, "content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert answer.json()["message"].startswith(
        "Malformed multipart body: its part headers come to more than "
    )


def test_the_specs_example_model_name_is_understood(client: TestClient) -> None:
    """The spec's example for ``model`` is "digital-art", its enum's name
    "digital-art-4x": a client copying the example works, and the task
    reports the enum's name."""
    key = new_principal(client.app.state.ctx, credits=10)[0]
    entry = _upload(client, key, png_bytes())
    started = client.post(
        "/start-task",
        files=[("files", (None, json.dumps([entry]), "application/json"))],
        data={"model": "digital-art"},
        headers={"X-API-Key": key},
    )
    assert started.status_code == 200, started.text
    assert _status(client, key, started.json()["data"]["taskId"])["model"] == "digital-art-4x"
    unknown = client.post(
        "/start-task",
        files=[("files", (None, json.dumps([entry]), "application/json"))],
        data={"model": "digital"},
        headers={"X-API-Key": key},
    )
    assert unknown.status_code == 400 and "Unknown model 'digital'" in unknown.json()["message"]


def test_file_and_files_together_are_refused(client: TestClient) -> None:
    key = new_principal(client.app.state.ctx, credits=10)[0]
    entry = _upload(client, key, png_bytes())
    response = client.post(
        "/start-task",
        files=[
            ("files", (None, json.dumps([entry]), "application/json")),
            ("file", ("a.png", png_bytes(), "image/png")),
        ],
        headers={"X-API-Key": key},
    )
    assert (response.status_code, response.json()["error"]) == (400, "BAD_REQUEST")


def test_an_option_sent_twice_is_refused(client: TestClient) -> None:
    """Which of scale=4 and scale=2 was meant? The last used to win, silently."""
    key = new_principal(client.app.state.ctx, credits=10)[0]
    response = client.post(
        "/start-task",
        data={"scale": ["4", "2"]},
        files=[("file", ("a.png", png_bytes(), "image/png"))],
        headers={"X-API-Key": key},
    )
    assert response.status_code == 400, response.text
    assert response.json() == {
        "error": "BAD_REQUEST",
        "message": "scale was sent 2 times; send it once",
    }


def test_files_json_is_bounded_in_all_before_it_is_checked(client: TestClient) -> None:
    """Sixty parts of 100 kB of ``[{},{},...]`` made the server build and check
    millions of entries on its event loop (1.7 GB, every client stalled for
    tens of seconds) before saying "at most 50 files"."""
    key = new_principal(client.app.state.ctx, credits=10)[0]
    huge = json.dumps({"fileName": "a" * 100_000, "fileType": "image/png"})
    too_much = client.post(
        "/start-task",
        files=[("files", (None, huge, "application/json")) for _ in range(20)],
        headers={"X-API-Key": key},
    )
    assert too_much.status_code == 400, too_much.text
    assert too_much.json()["message"].startswith("files is too large: at most 1024 kB of JSON")
    # The count is refused as soon as a part passes it, before any entry's
    # fields are read (7 is no entry at all) and before the next part (ten
    # parts of 66 kB: within the byte budget, which is counted first).
    many = "[" + ",".join(["7"] * 33_000) + "]"
    too_many = client.post(
        "/start-task",
        files=[("files", (None, many, "application/json")) for _ in range(10)],
        headers={"X-API-Key": key},
    )
    assert too_many.json() == {"error": "BAD_REQUEST", "message": "At most 50 files per task"}


def test_a_number_in_files_too_long_to_parse_is_named(client: TestClient) -> None:
    """Python refuses an integer of over 4300 digits with a ValueError that is
    no JSON error: the caller is told which, not that files is no JSON."""
    key = new_principal(client.app.state.ctx, credits=10)[0]
    entry = '{"fileName": "a.png", "fileSize": ' + "9" * 5000 + "}"
    answer = client.post(
        "/start-task",
        files=[("files", (None, entry, "application/json"))],
        headers={"X-API-Key": key},
    )
    assert answer.json() == {
        "error": "BAD_REQUEST",
        "message": "files holds a number too long to parse",
    }


def test_direct_upload_size_cap(tmp_path) -> None:
    from support.app import client_for
    from support.context import make_settings

    with client_for(make_settings(tmp_path, max_upload_bytes=1000)) as client:
        key = new_principal(client.app.state.ctx, credits=10)[0]
        headers = {"X-API-Key": key}
        over_cap = png_bytes(40, 40, padding=2000)  # under the form's allowance, over the cap
        response = client.post("/start-task", files={"file": ("a.png", over_cap)}, headers=headers)
        assert (response.status_code, response.json()["error"]) == (400, "FILE_SIZE_EXCEEDED")
        huge = png_bytes(8, 8, padding=2 * 1024 * 1024)  # refused from Content-Length
        response = client.post("/start-task", files={"file": ("a.png", huge)}, headers=headers)
        assert (response.status_code, response.json()["error"]) == (400, "FILE_SIZE_EXCEEDED")

        boundary = "b0undary"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
                "Content-Type: image/png\r\n\r\n"
            ).encode()
            + huge
            + f"\r\n--{boundary}--\r\n".encode()
        )

        def chunks():  # no Content-Length: the cap holds while the body streams
            for start in range(0, len(body), 65536):
                yield body[start : start + 65536]

        response = client.post(
            "/start-task",
            content=chunks(),
            headers={**headers, "content-type": f"multipart/form-data; boundary={boundary}"},
        )
        assert (response.status_code, response.json()["error"]) == (400, "FILE_SIZE_EXCEEDED")
        assert keys_left(client, key) == 10


def keys_left(client: TestClient, key: str) -> int:
    from upscayl_cloud.services import keys

    ctx = client.app.state.ctx
    return keys.account_credits(ctx, keys.authenticate(ctx, key).account_id)


def test_a_lone_surrogate_in_a_file_name_is_a_400_not_a_500(client: TestClient) -> None:
    key = new_principal(client.app.state.ctx, credits=10)[0]
    entry = {"fileName": "\ud800.png"}
    answer = client.post(
        "/start-task",
        files=[("files", (None, json.dumps([entry]), "application/json"))],
        headers={"X-API-Key": key},
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["message"] == (
        "files[0].fileName must be valid Unicode text (it holds a lone surrogate)"
    )


def test_a_direct_file_that_is_no_image_is_named_and_told_apart_from_an_empty_one(
    client: TestClient,
) -> None:
    key = new_principal(client.app.state.ctx, credits=10)[0]

    def send(name: str, data: bytes) -> dict:
        files = {"file": (name, data, "image/png")}
        return client.post("/start-task", files=files, headers={"X-API-Key": key}).json()

    assert send("notes.png", b"just some text") == {
        "error": "INVALID_FILE_TYPE",
        "message": "file 'notes.png': not a JPEG, PNG or WebP image",
    }
    assert send("blank.png", b"") == {
        "error": "BAD_REQUEST",
        "message": "file 'blank.png' is empty; send the image's bytes",
    }


def test_a_direct_file_is_not_kept_when_the_task_fails_to_start(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mock, of an outage between two steps: the file is stored, then the
    store goes away. The caller gets a 503 and sends the file again; the
    first copy must not count against the pending-upload cap for a day."""

    def store_gone(*_args: object) -> str:
        raise StorageUnavailableError("mock: the store went away after the file was saved")

    row, stored = _direct_start_meeting(client, monkeypatch, store_gone)
    assert row.deleted_at is not None and stored is None


def _direct_start_meeting(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, start_task: Callable[..., str]
) -> tuple[Any, int | None]:
    """A direct start-task whose service call is ``start_task``, answered
    503: the upload's one row, and the size of its object (None: gone)."""
    ctx = client.app.state.ctx
    key = new_principal(ctx, credits=10)[0]
    monkeypatch.setattr(task_service, "start_task", start_task)
    files = {"file": ("a.png", png_bytes(), "image/png")}
    answer = client.post("/start-task", files=files, headers={"X-API-Key": key})
    assert answer.status_code == 503, answer.text
    with ctx.db.begin() as conn:
        [row] = conn.execute(select(uploads.c.storage_key, uploads.c.deleted_at)).all()
    return row, ctx.storage.size(row.storage_key)


def test_a_direct_file_is_kept_when_its_task_did_start_after_all(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mock, of a connection lost during the commit: the task is created but
    the route sees an outage. The file the task reads must stay."""
    real_start = task_service.start_task

    def started_then_lost(*args: Any) -> str:
        real_start(*args)
        raise StorageUnavailableError("mock: the answer to the commit was lost")

    row, stored = _direct_start_meeting(client, monkeypatch, started_then_lost)
    assert row.deleted_at is None and stored is not None


def test_a_form_of_one_files_part_per_entry_fits_its_header_budget(tmp_path: Path) -> None:
    """The part headers' budget grows with the parts a form may have: a
    fixed 64 KiB refused a form of ~950 plain ``files`` parts (an httpx or
    requests form, one part per entry) that UPSCAYL_MAX_FILES_PER_TASK allowed."""
    settings = make_settings(tmp_path, max_files_per_task=1000, rate_limits_enabled=False)
    with client_for(settings) as client:
        key = new_principal(client.app.state.ctx, credits=5000)[0]
        entry = {"fileName": "u0.png", "fileType": "image/png", "fileSize": 1}
        parts = [("files", (None, json.dumps(entry), "application/json"))] * 1000
        answer = client.post("/start-task", files=parts, headers={"X-API-Key": key})
    assert answer.status_code == 400
    assert "u0.png" in answer.json()["message"]  # judged by its entries, not its headers
