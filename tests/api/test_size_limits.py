"""Refusals for size name this server's limit (UPSCAYL_MAX_UPLOAD_BYTES),
not the default's 100MB, whichever way the file came."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from support.app import client_for
from support.context import make_settings, new_principal
from support.images import png_bytes
from upscayl_cloud.config import Settings
from upscayl_cloud.services.errors import FileSizeExceededError

LIMIT = 1000


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path / "data", database_url=database_url, max_upload_bytes=LIMIT)


def test_every_size_refusal_names_the_configured_limit(client: TestClient) -> None:
    headers = {"X-API-Key": new_principal(client.app.state.ctx, credits=10)[0]}
    said = f"file size exceeds maximum limit of {LIMIT} bytes"

    declared = client.post(
        "/get-upload-url",
        json={"originalFileName": "a.png", "fileType": "image/png", "fileSize": LIMIT + 1},
        headers=headers,
    )
    assert declared.status_code == 400 and declared.json()["error"] == "FILE_SIZE_EXCEEDED"
    assert declared.json()["message"] == "F" + said[1:]

    listed = client.post(
        "/start-task",
        files=[("files", (None, json.dumps([{"fileName": "x.png", "fileSize": 5000}]), None))],
        headers=headers,
    )
    assert listed.status_code == 400 and listed.json()["message"].endswith(said)

    big = png_bytes(64, 64)
    assert len(big) > LIMIT
    direct = client.post(
        "/start-task", files={"file": ("b.png", big, "image/png")}, headers=headers
    )
    assert direct.status_code == 400 and direct.json()["error"] == "FILE_SIZE_EXCEEDED"
    assert direct.json()["message"] == "F" + said[1:]


def test_the_default_limit_is_said_in_the_specs_words() -> None:
    assert FileSizeExceededError.over(100 * 2**20).public_message == (
        FileSizeExceededError.public_message
    )
    assert FileSizeExceededError.over(2 * 2**20, "File 'a.png'").public_message == (
        "File 'a.png': file size exceeds maximum limit of 2MB"
    )


def test_a_limit_above_the_specs_100mb_is_the_one_applied(tmp_path: Path) -> None:
    """get-upload-url's request model kept the spec's 100 MB as a bound of
    its own: with UPSCAYL_MAX_UPLOAD_BYTES at 1 GiB (published as
    maxUploadBytes), a 200 MiB file was still refused as over 100MB."""
    settings = make_settings(tmp_path / "data", max_upload_bytes=2**30)
    with client_for(settings) as client:
        headers = {"X-API-Key": new_principal(client.app.state.ctx, credits=10)[0]}
        body = {"originalFileName": "a.png", "fileType": "image/png", "fileSize": 200 * 2**20}
        accepted = client.post("/get-upload-url", json=body, headers=headers)
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["data"]["fileSize"] == 200 * 2**20
        body["fileSize"] = 2**30 + 1
        refused = client.post("/get-upload-url", json=body, headers=headers)
        assert refused.json() == {
            "error": "FILE_SIZE_EXCEEDED",
            "message": "File size exceeds maximum limit of 1024MB",
        }
