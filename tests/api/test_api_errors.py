"""The error shape and code mapping, through the real app in-process."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from support.context import new_principal
from upscayl_cloud.services.context import Context


@pytest.fixture
def key(client: TestClient) -> str:
    ctx: Context = client.app.state.ctx
    return new_principal(ctx, credits=5)[0]


def _post(client: TestClient, path: str, key: str | None, body: object) -> tuple[int, dict]:
    headers = {"X-API-Key": key} if key else {}
    response = client.post(path, json=body, headers=headers)
    return response.status_code, response.json()


GOOD = {"originalFileName": "a.png", "fileType": "image/png", "fileSize": 10}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"fileType": "image/png", "fileSize": 10}, "MISSING_REQUIRED_FIELDS"),
        ({**GOOD, "fileType": "image/gif"}, "INVALID_FILE_TYPE"),
        ({**GOOD, "fileSize": 104857601}, "FILE_SIZE_EXCEEDED"),
        ({**GOOD, "fileSize": 0}, "BAD_REQUEST"),
        ({**GOOD, "fileSize": "10"}, "BAD_REQUEST"),
        ([1, 2], "BAD_REQUEST"),
    ],
)
def test_upload_url_validation_codes(client: TestClient, key: str, body: object, code: str) -> None:
    status, payload = _post(client, "/get-upload-url", key, body)
    assert (status, payload["error"]) == (400, code)
    assert set(payload) == {"error", "message"}


def test_body_at_top_level_or_wrapped_in_data(client: TestClient, key: str) -> None:
    assert _post(client, "/get-upload-url", key, GOOD)[0] == 200
    status, payload = _post(client, "/get-upload-url", key, {"data": GOOD})
    assert status == 200 and payload["data"]["fileName"].endswith("a.png")
    missing = "00000000-0000-4000-8000-000000000000"
    assert _post(client, "/get-task-status", key, {"data": {"taskId": missing}})[0] == 404


def test_auth_errors(client: TestClient) -> None:
    for key in (None, "uc_wrong"):
        status, payload = _post(client, "/get-upscayl-history", key, {})
        assert (status, payload["error"]) == (401, "UNAUTHORIZED")


def test_unknown_route_and_method(client: TestClient) -> None:
    assert client.get("/nope").json()["error"] == "NOT_FOUND"
    response = client.get("/start-task")
    assert (response.status_code, response.json()["error"]) == (405, "METHOD_NOT_ALLOWED")
    assert response.json()["message"] == "GET is not allowed on /start-task; use POST"
    assert response.headers["allow"] == "POST"


def test_a_trailing_slash_gets_a_404_naming_the_path_without_it(
    client: TestClient, key: str
) -> None:
    """Not Starlette's bare 307, which a client that does not follow
    redirects cannot read."""
    response = client.post("/get-upscayl-history/", json={}, headers={"X-API-Key": key})
    assert (response.status_code, response.json()["error"]) == (404, "NOT_FOUND")
    assert response.json()["message"] == (
        "Nothing is at /get-upscayl-history/; "
        "did you mean /get-upscayl-history (no trailing slash)?"
    )
    assert client.get("/nope/").json()["message"] == "Requested resource could not be found"


def test_a_405_names_every_method_of_the_path(client: TestClient) -> None:
    """A local-store link takes PUT (one route) and GET, HEAD (another)."""
    response = client.delete("/objects/uploads/a/b.png")
    assert (response.status_code, response.json()["error"]) == (405, "METHOD_NOT_ALLOWED")
    assert response.headers["allow"] == "GET, HEAD, PUT"
    assert response.json()["message"] == (
        "DELETE is not allowed on /objects/uploads/a/b.png; use one of GET, HEAD, PUT"
    )


def test_malformed_json(client: TestClient, key: str) -> None:
    response = client.post(
        "/get-task-status",
        content=b"{nope",
        headers={"X-API-Key": key, "content-type": "application/json"},
    )
    assert (response.status_code, response.json()["error"]) == (400, "BAD_REQUEST")


def test_task_status_needs_a_uuid(client: TestClient, key: str) -> None:
    assert _post(client, "/get-task-status", key, {"taskId": "x"})[1]["error"] == "BAD_REQUEST"
    assert _post(client, "/get-task-status", key, {})[1]["error"] == "MISSING_REQUIRED_FIELDS"


def test_history_validation(client: TestClient, key: str) -> None:
    assert _post(client, "/get-upscayl-history", key, {"limit": 0})[0] == 400
    assert _post(client, "/get-upscayl-history", key, {"limit": 101})[0] == 400
    assert _post(client, "/get-upscayl-history", key, {"processed": "nope"})[0] == 400
    status, payload = _post(client, "/get-upscayl-history", key, {})
    assert status == 200 and payload["pagination"] == {"total": 0, "hasMore": False}


def test_start_task_form_errors(client: TestClient, key: str) -> None:
    headers = {"X-API-Key": key}
    cases = [
        ({"model": "quick-clear-4x"}, None, "MISSING_REQUIRED_FIELDS"),
        ({"model": "nope", "files": "[]"}, None, "BAD_REQUEST"),
        ({"files": "{not json"}, None, "BAD_REQUEST"),
        ({"enhanceFace": "maybe", "files": "[]"}, None, "BAD_REQUEST"),
        ({}, {"file": ("a.gif", b"GIF89a....", "image/gif")}, "INVALID_FILE_TYPE"),
    ]
    for data, files, code in cases:
        response = client.post(
            "/start-task", data=data, files=files or {"x": ("", b"")}, headers=headers
        )
        assert (response.status_code, response.json()["error"]) == (400, code), data
    response = client.post("/start-task", json={"files": []}, headers=headers)
    assert (response.status_code, response.json()["error"]) == (400, "BAD_REQUEST")
