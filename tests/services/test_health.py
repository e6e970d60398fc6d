"""The readiness checks against a real database that does not answer."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from support.context import make_settings
from upscayl_cloud.services.context import build_context
from upscayl_cloud.services.health import check_dependencies


def test_a_hung_database_does_not_hide_whether_the_store_answers(tmp_path: Path) -> None:
    """The store was only probed after the database answered: with the
    database hung, /readyz said "Not ready: database, storage" though the
    store was fine. An SQLite write lock held elsewhere makes the database
    check wait (its busy timeout, 30 s) for real."""
    ctx = build_context(make_settings(tmp_path / "data"))
    database = ctx.settings.resolved_database_url.removeprefix("sqlite:///")
    holder = sqlite3.connect(database, isolation_level=None)
    results: dict[str, bool] = {}
    try:
        holder.execute("BEGIN IMMEDIATE")
        probe = threading.Thread(target=check_dependencies, args=(ctx, results), daemon=True)
        probe.start()
        deadline = time.monotonic() + 20
        while "storage" not in results and time.monotonic() < deadline:
            time.sleep(0.05)
        assert results == {"storage": True}  # and the database still waits
        assert probe.is_alive()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    probe.join(timeout=30)
    assert results == {"storage": True, "database": True}
    ctx.db.dispose()
