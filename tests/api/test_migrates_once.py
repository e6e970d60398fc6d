"""``serve`` builds a context for the first key, then the app its own: the
database is migrated once per process, not once per context."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from support.app import client_for
from support.context import make_settings
from upscayl_cloud.cli.serve import first_start_key


def test_serve_start_migrates_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(tmp_path / "data")
    with caplog.at_level(logging.INFO, logger="alembic"):
        assert first_start_key(settings) is not None
        with client_for(settings) as client:
            assert client.get("/healthz").status_code == 200
    starts = [r for r in caplog.records if r.getMessage().startswith("Context impl")]
    assert len(starts) == 1
