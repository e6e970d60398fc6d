"""The readiness checks against a real database that does not answer, and
one that is only busy writing."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support.context import make_settings
from upscayl_cloud.services.context import build_context
from upscayl_cloud.services.health import check_dependencies


def _locked(database: str, reads_too: bool) -> sqlite3.Connection:
    """A connection holding SQLite's write lock; with ``reads_too``, in
    exclusive locking mode, so that readers wait as well (the database hung
    for every purpose)."""
    holder = sqlite3.connect(database, isolation_level=None)
    if reads_too:
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("DELETE FROM tasks")
    else:
        holder.execute("BEGIN IMMEDIATE")
    return holder


@contextmanager
def _probed_while_locked(
    tmp_path: Path, reads_too: bool
) -> Iterator[tuple[threading.Thread, dict[str, bool]]]:
    """The readiness checks started while ``_locked`` holds the database;
    the lock is let go on exit, and the checks waited for."""
    ctx = build_context(make_settings(tmp_path / "data"))
    ctx.db.dispose()  # pooled connections would keep an exclusive lock from being taken
    holder = _locked(ctx.settings.resolved_database_url.removeprefix("sqlite:///"), reads_too)
    results: dict[str, bool] = {}
    probe = threading.Thread(target=check_dependencies, args=(ctx, results), daemon=True)
    try:
        probe.start()
        yield probe, results
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        probe.join(timeout=30)
        ctx.db.dispose()


def test_a_hung_database_does_not_hide_whether_the_store_answers(tmp_path: Path) -> None:
    """The store was only probed after the database answered: with the
    database hung, /readyz said "Not ready: database, storage" though the
    store was fine. A lock held elsewhere that shuts readers out makes the
    database check wait (its busy timeout, 30 s) for real."""
    with _probed_while_locked(tmp_path, reads_too=True) as (probe, results):
        deadline = time.monotonic() + 20
        while "storage" not in results and time.monotonic() < deadline:
            time.sleep(0.05)
        assert results == {"storage": True}  # and the database still waits
        assert probe.is_alive()
    assert results == {"storage": True, "database": True}


def test_a_write_held_elsewhere_does_not_make_the_database_look_down(tmp_path: Path) -> None:
    """The check took the write lock (SQLite's BEGIN IMMEDIATE) and waited
    behind any worker's write: one held past the readiness timeout made
    /readyz answer "database" not ready while every read worked."""
    with _probed_while_locked(tmp_path, reads_too=False) as (probe, results):
        probe.join(timeout=5)
        answered = dict(results)
    assert answered == {"storage": True, "database": True}
