"""get-upload-url's refusal when an account's waiting uploads are at their cap,
through the real app: the spec's 429 shape, a message that says what to do,
and a Retry-After header (when the oldest waiting upload expires)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from support.context import make_settings, new_principal
from upscayl_cloud.config import Settings

FILE = 1000


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(
        tmp_path / "data",
        database_url=database_url,
        max_upload_bytes=FILE,
        max_pending_upload_bytes=2 * FILE,
    )


def test_past_the_cap_is_429_with_retry_after(client: TestClient) -> None:
    headers = {"X-API-Key": new_principal(client.app.state.ctx, credits=0)[0]}
    body = {"originalFileName": "a.png", "fileType": "image/png", "fileSize": FILE}
    for _ in range(2):
        accepted = client.post("/get-upload-url", json=body, headers=headers)
        assert accepted.status_code == 200, accepted.text
    refused = client.post("/get-upload-url", json=body, headers=headers)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"] == "RATE_LIMIT_EXCEEDED"
    assert "Start tasks for the files uploaded" in refused.json()["message"]
    retention = client.app.state.ctx.settings.upload_retention_seconds
    assert retention - 60 <= int(refused.headers["Retry-After"]) <= retention + 1
