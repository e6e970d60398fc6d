"""Error messages that tell the caller what to fix, through the real app:
bodies that are no JSON object, broken multipart bodies, fields of the
wrong type, missing fields named as the spec names them, and the caller's
own input repeated only as much as it takes to recognise it."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from support.context import new_principal


@pytest.fixture
def key(client: TestClient) -> str:
    return new_principal(client.app.state.ctx, credits=5)[0]


def _error(response: object) -> tuple[int, str, str]:
    payload = response.json()  # type: ignore[attr-defined]
    assert set(payload) == {"error", "message"}, payload
    return response.status_code, payload["error"], payload["message"]  # type: ignore[attr-defined]


def test_malformed_json_says_so_with_its_position(client: TestClient, key: str) -> None:
    response = client.post(
        "/get-task-status",
        content=b'{"taskId": ',
        headers={"X-API-Key": key, "content-type": "application/json"},
    )
    status, code, message = _error(response)
    assert (status, code) == (400, "BAD_REQUEST")
    assert "not valid JSON" in message and "character 11" in message
    assert "decode error" not in message


@pytest.mark.parametrize(
    ("body", "says", "hint"),
    [
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, "nested too deeply", True),
        (b'{"taskId": "\xff"}', "not valid UTF-8 (byte 12)", True),
        # Python's own limit on an integer's digits: a ValueError that is no
        # JSON decode error (the body is JSON; its number is the fault).
        (b'{"taskId": ' + b"9" * 5000 + b"}", "a number too long to parse (more than 4300", False),
    ],
)
def test_a_body_the_parser_gives_up_on_says_why(
    client: TestClient, key: str, body: bytes, says: str, hint: bool
) -> None:
    """FastAPI answers all of these with "There was an error parsing the body"."""
    response = client.post(
        "/get-task-status",
        content=body,
        headers={"X-API-Key": key, "content-type": "application/json"},
    )
    status, code, message = _error(response)
    assert (status, code) == (400, "BAD_REQUEST")
    assert says in message and "error parsing the body" not in message
    assert ("Content-Type: application/json" in message) is hint


@pytest.mark.parametrize(
    ("content_type", "body", "named"),
    [
        ("text/plain", b'{"taskId": "30a89e69-c702-4247-9905-f0a53dfa45ab"}', "text/plain"),
        ("application/x-www-form-urlencoded", b"taskId=x", "application/x-www-form-urlencoded"),
        ("application/json", b"[1, 2]", "JSON object"),
    ],
)
def test_a_body_that_is_no_json_object_names_the_fix(
    client: TestClient, key: str, content_type: str, body: bytes, named: str
) -> None:
    response = client.post(
        "/get-task-status", content=body, headers={"X-API-Key": key, "content-type": content_type}
    )
    status, code, message = _error(response)
    assert (status, code) == (400, "BAD_REQUEST")
    assert "Content-Type: application/json" in message and named in message
    assert "valid dictionary" not in message


def test_multipart_without_boundary(client: TestClient, key: str) -> None:
    response = client.post(
        "/start-task",
        content=b"--x\r\n",
        headers={"X-API-Key": key, "content-type": "multipart/form-data"},
    )
    status, code, message = _error(response)
    assert (status, code) == (400, "BAD_REQUEST")
    assert "boundary" in message and "400:" not in message


def test_multipart_without_closing_boundary_is_incomplete(client: TestClient, key: str) -> None:
    body = b'--B\r\nContent-Disposition: form-data; name="files"\r\n\r\n[{"fileName": "a.png"}]\r\n'
    response = client.post(
        "/start-task",
        content=body,
        headers={"X-API-Key": key, "content-type": "multipart/form-data; boundary=B"},
    )
    status, code, message = _error(response)
    assert (status, code) == (400, "BAD_REQUEST")
    assert "closing boundary" in message


def test_an_empty_multipart_body_is_missing_its_fields(client: TestClient, key: str) -> None:
    """Nothing sent is not a malformed body: the fields are missing."""
    response = client.post(
        "/start-task",
        content=b"",
        headers={"X-API-Key": key, "content-type": "multipart/form-data; boundary=B"},
    )
    assert _error(response) == (
        400,
        "MISSING_REQUIRED_FIELDS",
        "Required fields missing: file or files",
    )


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"fileName": 123}, "files[0].fileName must be a string, not an integer"),
        (
            {"fileName": "a.png", "fileSize": "10"},
            "files[0].fileSize must be an integer, not a string",
        ),
        (
            {"fileName": "a.png", "fileSize": True},
            "files[0].fileSize must be an integer, not a boolean",
        ),
        ({"fileName": ["a"]}, "files[0].fileName must be a string, not an array"),
    ],
)
def test_files_field_of_the_wrong_type(
    client: TestClient, key: str, entry: dict, expected: str
) -> None:
    response = client.post(
        "/start-task",
        files=[("files", (None, json.dumps([entry]), "application/json"))],
        headers={"X-API-Key": key},
    )
    assert _error(response) == (400, "BAD_REQUEST", expected)


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, "data.uploadId, data.key, data.parts"),
        ({"data": {}}, "data.uploadId, data.key, data.parts"),
        ({"data": {"uploadId": "u"}}, "data.key, data.parts"),
        ({"uploadId": "u", "key": "k"}, "data.parts"),
    ],
)
def test_complete_multipart_names_the_missing_fields(
    client: TestClient, key: str, body: dict, fields: str
) -> None:
    response = client.post("/complete-multipart-upload", json=body, headers={"X-API-Key": key})
    assert _error(response) == (
        400,
        "MISSING_REQUIRED_FIELDS",
        f"Required fields missing: {fields}",
    )


@pytest.mark.parametrize(
    "path",
    ["/get-upscayl-history", "/get-task-status", "/get-upload-url", "/complete-multipart-upload"],
)
def test_every_json_operation_requires_its_body(client: TestClient, key: str, path: str) -> None:
    """The spec marks each body required; get-upscayl-history is no exception
    (``{}`` is its unfiltered first page)."""
    status, code, message = _error(client.post(path, headers={"X-API-Key": key}))
    assert (status, code) == (400, "MISSING_REQUIRED_FIELDS")
    assert message.startswith("Required fields missing: body")
    history = client.post("/get-upscayl-history", json={}, headers={"X-API-Key": key})
    assert history.status_code == 200


def test_long_input_is_not_echoed_in_full(client: TestClient, key: str) -> None:
    long_name = "x" * 5000
    cases = [
        client.post(
            "/start-task",
            files=[("files", (None, json.dumps([{"fileName": long_name}]), "application/json"))],
            headers={"X-API-Key": key},
        ),
        client.post(
            "/start-task",
            files=[("files", (None, json.dumps([{"fileName": "a.png"}]), "application/json"))],
            data={"model": "m" * 5000},
            headers={"X-API-Key": key},
        ),
        client.post("/get-task-status", json={"taskId": "t" * 5000}, headers={"X-API-Key": key}),
    ]
    for response, echoed in zip(cases, "xmt", strict=True):
        status, code, message = _error(response)
        assert (status, code) == (400, "BAD_REQUEST")
        assert echoed * 101 not in message, message  # clipped to 100 characters
        assert len(message) < 400, message  # the echo, and what to send instead


def test_task_id_pattern_is_explained(client: TestClient, key: str) -> None:
    response = client.post("/get-task-status", json={"taskId": "42"}, headers={"X-API-Key": key})
    status, code, message = _error(response)
    assert (status, code) == (400, "BAD_REQUEST")
    assert "must be a UUID" in message and "[0-9a-f" not in message
