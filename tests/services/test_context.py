"""What building a context creates on disk."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from support.context import make_settings
from upscayl_cloud.services import keys
from upscayl_cloud.services.context import build_context


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_data_directory_and_database_are_private(tmp_path: Path) -> None:
    """With the usual umask (022) they came out world-readable: account
    names, file names and the whole history for any local user."""
    old = os.umask(0o022)
    try:
        settings = make_settings(tmp_path / "data")
        ctx = build_context(settings)
        keys.create_key(ctx, "someone", 5)  # writes, so SQLite's journal exists now
        journals = sorted((tmp_path / "data").glob("upscayl.db-*"))
        journal_modes = [_mode(p) for p in journals]
        ctx.db.dispose()
    finally:
        os.umask(old)
    assert _mode(tmp_path / "data") == 0o700
    database = tmp_path / "data" / "upscayl.db"
    assert database.stat().st_size > 0
    assert _mode(database) == 0o600
    assert journals
    assert journal_modes == [0o600] * len(journals)


def test_an_existing_data_directory_keeps_its_owners_mode(tmp_path: Path) -> None:
    shared = tmp_path / "data"
    shared.mkdir(mode=0o750)
    shared.chmod(0o750)
    build_context(make_settings(shared)).db.dispose()
    assert _mode(shared) == 0o750
