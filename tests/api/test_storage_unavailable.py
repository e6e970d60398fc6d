"""An object store that is down or frozen, through the real app: 503 with
Retry-After (the client retries it) and one warning line, and a /readyz that
neither waits for the store nor lets callers pile up probes on it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from support.app import client_for
from support.context import make_settings, new_principal
from support.images import png_bytes
from tests.storage.unreachable import FrozenStore, closed_endpoint


@contextmanager
def _s3_client(tmp_path: Path, endpoint: str, **overrides: object) -> Iterator[TestClient]:
    values: dict[str, object] = {
        "storage_backend": "s3",
        "s3_bucket": "bucket",
        "s3_endpoint_url": endpoint,
        "s3_access_key_id": "key",
        "s3_secret_access_key": "secret",
        "s3_connect_timeout_seconds": 1,
        "s3_read_timeout_seconds": 1,
        "s3_max_attempts": 1,
    }
    settings = make_settings(tmp_path / "data", **{**values, **overrides})
    with client_for(settings) as client:
        yield client


@pytest.fixture
def down(tmp_path: Path) -> Iterator[TestClient]:
    with _s3_client(tmp_path, closed_endpoint()) as client:
        yield client


def _assert_unavailable(response: object, caplog: pytest.LogCaptureFixture) -> None:
    assert response.status_code == 503, response.text  # type: ignore[attr-defined]
    assert response.json()["error"] == "SERVICE_UNAVAILABLE"  # type: ignore[attr-defined]
    assert int(response.headers["Retry-After"]) > 0  # type: ignore[attr-defined]
    warnings = [r for r in caplog.records if r.name == "upscayl_cloud.api.errors"]
    assert [r.levelno for r in warnings] == [logging.WARNING]
    assert warnings[0].exc_info is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_multipart_upload_url_on_a_down_store_is_503(
    down: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    key = new_principal(down.app.state.ctx)[0]
    body = {"originalFileName": "a.png", "fileType": "image/png", "fileSize": 10, "multipart": True}
    with caplog.at_level(logging.WARNING):
        response = down.post("/get-upload-url", json=body, headers={"X-API-Key": key})
    _assert_unavailable(response, caplog)


def test_start_task_with_a_file_on_a_down_store_is_503(
    down: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    key = new_principal(down.app.state.ctx)[0]
    with caplog.at_level(logging.WARNING):
        response = down.post(
            "/start-task",
            files=[("file", ("a.png", png_bytes(), "image/png"))],
            headers={"X-API-Key": key},
        )
    _assert_unavailable(response, caplog)


def test_readyz_on_a_frozen_store_shares_one_bounded_probe(tmp_path: Path) -> None:
    """20 concurrent probes: one reaches the store, all answer 503 within the
    readiness timeout, and /healthz answers meanwhile."""
    with (
        FrozenStore() as frozen,
        _s3_client(
            tmp_path,
            frozen.url,
            readiness_timeout_seconds=0.5,
            readiness_cache_seconds=30,
            s3_read_timeout_seconds=3,
        ) as client,
    ):
        answers: list[int] = []

        def probe() -> None:
            answers.append(client.get("/readyz").status_code)

        threads = [threading.Thread(target=probe, daemon=True) for _ in range(20)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(0.2)
        assert client.get("/healthz").status_code == 200
        for thread in threads:
            thread.join(timeout=8)
        assert answers == [503] * 20
        assert time.monotonic() - started < 3  # the probe itself is still waiting
        assert frozen.connections == 1
        time.sleep(3)  # the probe times out and is cached (30 s): no new probe
        body = client.get("/readyz").json()
        assert body == {"error": "NOT_READY", "message": "Not ready: storage"}
        assert frozen.connections == 1
