"""The command's settings are read from the environment once per process
(``get_settings`` is cached): tests that set ``UPSCAYL_*`` variables start
from a fresh read, on a data directory of their own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from upscayl_cloud.config import get_settings


@pytest.fixture
def fresh_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("UPSCAYL_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
