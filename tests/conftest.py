"""Fixtures shared by every service test: settings and a real context on a
temporary data directory (real SQLite, real files)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# ``tests/support`` is importable as ``support`` from every test folder.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from support.context import make_settings, new_principal
from upscayl_cloud.config import Settings
from upscayl_cloud.services.context import Context, build_context
from upscayl_cloud.services.keys import Principal


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


@pytest.fixture
def ctx(settings: Settings) -> Iterator[Context]:
    context = build_context(settings)
    yield context
    context.db.dispose()


@pytest.fixture
def principal(ctx: Context) -> Principal:
    return new_principal(ctx)[1]
