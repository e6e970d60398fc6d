"""Task ids in any case, and file names a client can trust: the generated
``fileName`` of an upload and the ``processedFileName`` it saves a result
under. Through the real app; the engine's part (an upscaled file) is
recorded with the worker's own naming, so no model has to run."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from support.context import new_principal
from support.images import png_bytes
from upscayl_cloud.db.tables import task_files
from upscayl_cloud.queue.lease import claim
from upscayl_cloud.services.context import Context
from upscayl_cloud.services.results import FileOutcome, finish_task
from upscayl_cloud.worker import processed_name


def _upload(client: TestClient, key: str, original: str) -> dict:
    data = png_bytes()
    body = {"originalFileName": original, "fileType": "image/png", "fileSize": len(data)}
    response = client.post("/get-upload-url", json=body, headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    link = response.json()["data"]
    put = client.put(link["uploadURL"], content=data, headers={"content-type": "image/png"})
    assert put.status_code == 200, put.text
    return link


def _start(client: TestClient, key: str, file_name: str) -> str:
    response = client.post(
        "/start-task",
        files=[("files", (None, json.dumps([{"fileName": file_name}]), "application/json"))],
        data={"model": "quick-clear-4x", "scale": "2", "saveImageAs": "png"},
        headers={"X-API-Key": key},
    )
    assert response.status_code == 200, response.text
    return response.json()["data"]["taskId"]


def _complete(ctx: Context, task_id: str) -> None:
    """Record the task as a worker would, naming the result as the worker does."""
    held = claim(ctx.db, "test-worker", 30, 3)
    assert held is not None and held.task_id == task_id
    with ctx.db.begin() as conn:
        row = conn.execute(select(task_files).where(task_files.c.task_id == task_id)).one()
    name = processed_name(row.original_file_name, 2, "quick-clear-4x", "png")
    outcome = FileOutcome(
        row.id, True, None, "results/x/0.png", "thumbs/x/0.webp", name, "image/png", 10, 4, 4
    )
    assert finish_task(ctx, held, [outcome], {row.id: repr(row.original_file_name)})


def _status(client: TestClient, key: str, task_id: str) -> tuple[int, dict]:
    response = client.post("/get-task-status", json={"taskId": task_id}, headers={"X-API-Key": key})
    return response.status_code, response.json()


def test_upper_case_task_id_finds_the_callers_task(client: TestClient) -> None:
    key = new_principal(client.app.state.ctx, credits=5)[0]
    task_id = _start(client, key, _upload(client, key, "a.png")["fileName"])
    for variant in (task_id, task_id.upper(), {"data": {"taskId": task_id.upper()}}):
        body = variant if isinstance(variant, dict) else {"taskId": variant}
        response = client.post("/get-task-status", json=body, headers={"X-API-Key": key})
        assert response.status_code == 200, response.text
        assert response.json()["data"]["taskId"] == task_id
    other = new_principal(client.app.state.ctx, credits=5)[0]
    assert _status(client, other, task_id.upper())[0] == 404


@pytest.mark.parametrize(
    ("original", "expected"),
    [
        ("..\\..\\win.png", "win_upscayl_2x_quick-clear-4x.png"),
        ("a\r\nSet-Cookie: x=1.png", "a_Set-Cookie_ x=1_upscayl_2x_quick-clear-4x.png"),
        ("C:\\Users\\me\\фото.png", "фото_upscayl_2x_quick-clear-4x.png"),
        ("..hidden.png", "hidden_upscayl_2x_quick-clear-4x.png"),
        ("my__photo.png", "my__photo_upscayl_2x_quick-clear-4x.png"),  # the caller's own
        # A long stem is cut, never the suffix: the result is never named as its source.
        ("x" * 251 + ".png", "x" * 170 + "_upscayl_2x_quick-clear-4x.png"),
    ],
)
def test_processed_file_name_is_a_safe_base_name(
    client: TestClient, original: str, expected: str
) -> None:
    ctx: Context = client.app.state.ctx
    key = new_principal(ctx, credits=5)[0]
    task_id = _start(client, key, _upload(client, key, original)["fileName"])
    _complete(ctx, task_id)
    status, payload = _status(client, key, task_id)
    assert status == 200, payload
    result = payload["data"]["files"][0]
    assert result["processedFileName"] == expected
    assert result["originalFileName"] == original  # the client's label, reported as given
    link = parse_qs(urlsplit(result["downloadLink"]).query)
    assert link["name"] == [expected]


@pytest.mark.parametrize(
    ("original", "stem", "ext"),
    [
        ("фото.png", "фото", "png"),
        ("my holiday photo.PNG", "my-holiday-photo", "PNG"),
        ("..\\..\\win.png", "win", "png"),
        ("a\r\nb.png", "a-b", "png"),
        ("no-extension", "no-extension", "png"),
        ("...", "image", "png"),
    ],
)
def test_generated_file_name_keeps_stem_and_extension(
    client: TestClient, original: str, stem: str, ext: str
) -> None:
    key = new_principal(client.app.state.ctx, credits=5)[0]
    name = _upload(client, key, original)["fileName"]
    prefix, _, rest = name.partition("-")
    assert len(prefix) == 12 and rest == f"{stem}.{ext}"


@pytest.mark.parametrize(
    ("original", "file_type", "rest"),
    [
        ("vacation photo.jpeg", "image/jpeg", "vacation-photo.jpeg"),  # the spec's example
        ("IMG_0001.JPG", "image/jpeg", "IMG_0001.JPG"),
        ("x.html", "image/png", "x-html.png"),
        ("x.svg", "image/webp", "x-svg.webp"),
        ("photo.jpg", "image/png", "photo-jpg.png"),
        ("photo.png", "image/jpeg", "photo-png.jpg"),
    ],
)
def test_the_stored_extension_is_the_declared_types(
    client: TestClient, original: str, file_type: str, rest: str
) -> None:
    """Stores serve an object as the type its extension names: the client's
    extension stays only when it is one of the declared type's usual ones."""
    key = new_principal(client.app.state.ctx, credits=5)[0]
    body = {"originalFileName": original, "fileType": file_type, "fileSize": 10}
    response = client.post("/get-upload-url", json=body, headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    assert response.json()["data"]["fileName"].partition("-")[2] == rest


def test_long_generated_file_name_is_cut_in_the_stem(client: TestClient) -> None:
    key = new_principal(client.app.state.ctx, credits=5)[0]
    for original in ("a" * 251 + ".png", "é" * 251 + ".png"):
        name = _upload(client, key, original)["fileName"]
        assert name.endswith(".png"), name
        assert original[:85] in name  # more than the old 80-character cut kept
        assert len(name.encode()) <= 200  # one file name on any file system, with room
        # The generated name is usable in start-task.
        assert _start(client, key, name)


def test_a_nul_anywhere_a_client_names_something_is_a_400_on_every_database(
    client: TestClient,
) -> None:
    """PostgreSQL's text columns refuse NUL (SQLite takes it): each of these
    was a 500 there, and the direct file's object was left behind."""
    key = new_principal(client.app.state.ctx, credits=10)[0]
    headers = {"X-API-Key": key}
    data = png_bytes()
    asked = client.post(
        "/get-upload-url",
        json={"originalFileName": "a\x00b.png", "fileType": "image/png", "fileSize": len(data)},
        headers=headers,
    )
    assert asked.status_code == 400, asked.text
    assert asked.json()["error"] == "BAD_REQUEST"
    assert "originalFileName: must not contain NUL characters" in asked.json()["message"]

    listed = client.post(
        "/start-task",
        files=[("files", (None, json.dumps([{"fileName": "a\x00b.png"}]), "application/json"))],
        headers=headers,
    )
    assert listed.status_code == 400, listed.text
    assert listed.json()["message"] == "files[0].fileName must not contain NUL characters (\\u0000)"

    boundary = b"nul-in-a-filename"
    body = b"".join(
        [
            b"--" + boundary + b"\r\n",
            b'Content-Disposition: form-data; name="file"; filename="a\x00b.png"\r\n',
            b"Content-Type: image/png\r\n\r\n",
            data,
            b"\r\n--" + boundary + b"--\r\n",
        ]
    )  # fmt: skip (by hand: httpx escapes the NUL)
    sent = client.post(
        "/start-task",
        content=body,
        headers={**headers, "Content-Type": f"multipart/form-data; boundary={boundary.decode()}"},
    )
    assert sent.status_code == 400, sent.text
    assert "filename must not contain NUL characters" in sent.json()["message"]
    objects = client.app.state.ctx.settings.resolved_storage_dir
    assert not [p for p in objects.rglob("*") if p.is_file() and "uploads" in p.parts]

    done = client.post(
        "/complete-multipart-upload",
        json={"uploadId": "a\x00", "key": "k", "parts": [{"PartNumber": 1, "ETag": "x"}]},
        headers=headers,
    )
    assert done.status_code == 400, done.text
    assert "must not contain NUL characters" in done.json()["message"]
