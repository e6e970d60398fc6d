"""Whether this process can serve: its database answers and its object
store takes a write (what ``/readyz`` reports, with the workers)."""

from __future__ import annotations

import logging
import threading

from sqlalchemy import select

from upscayl_cloud.db.engine import reading
from upscayl_cloud.db.tables import tasks
from upscayl_cloud.services.context import Context

log = logging.getLogger(__name__)

#: What is checked, in order; a caller that stops waiting counts the
#: checks not answered yet as failed.
CHECKS = ("database", "storage")


def check_dependencies(ctx: Context, results: dict[str, bool]) -> None:
    """Fill ``results`` check by check, so a caller that stops waiting still
    knows which checks answered (and which one hangs). The two run side by
    side: a database that hangs (a frozen server, a lock held) must not hide
    whether the store answers."""
    storage = threading.Thread(
        target=_check_storage, args=(ctx, results), name="readiness-storage", daemon=True
    )
    storage.start()
    _check_database(ctx, results)
    storage.join()


def _check_database(ctx: Context, results: dict[str, bool]) -> None:
    # A reading transaction: a plain one is SQLite's BEGIN IMMEDIATE, and a
    # worker's write held past the readiness timeout made the probe say
    # "database" down while every read worked. It reads a table, not
    # ``SELECT 1``, which SQLite answers without opening the database file.
    try:
        with reading(ctx.db) as conn:
            conn.execute(select(tasks.c.id).limit(1)).all()
        results["database"] = True
    except Exception as exc:
        log.warning("readiness: database check failed: %s", exc)
        results["database"] = False


def _check_storage(ctx: Context, results: dict[str, bool]) -> None:
    try:
        ctx.storage.write_stream("health/probe", iter([b"ok"]), 16)
        results["storage"] = True
    except Exception as exc:
        log.warning("readiness: storage check failed: %s", exc)
        results["storage"] = False
