"""An in-process app on a temporary data directory, for the API tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi.testclient import TestClient

from upscayl_cloud.api.app import create_app
from upscayl_cloud.config import Settings


@contextmanager
def client_for(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"
