"""Retention: delete what has expired, and fail tasks that were lost for good.

Originals expire ``upload_retention_seconds`` after upload (24 h by default),
results ``result_retention_seconds`` after completion. Rows stay (history
still lists the task) but are marked deleted, and links to them answer 410
or 404: a stale file is never served. Originals still needed by a queued
task are kept until it finishes.

An original can expire while a start-task that names it is reading its
header, before the task exists to protect it. Each side therefore decides
under a lock on the upload's row: the sweeper marks the row deleted only
while no live task names it, and start-task re-checks its uploads, locked,
in the transaction that creates the task. Whichever commits first wins: the
task keeps its original, or start-task answers that the upload has expired.
The object is deleted after the mark commits (a storage call must not hold
the lock, which on SQLite is the whole database's), and the mark is undone
when that deletion fails, so the next pass tries again; only a process killed
between the two leaves that one object behind. An object the store refuses to delete
is left for the next pass, and an outage of the store ends the pass's
deletions, but never the reaping of lost tasks.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Row, and_, exists, select, update

from upscayl_cloud.db.engine import now_ms
from upscayl_cloud.db.tables import task_files, tasks, uploads
from upscayl_cloud.services.context import Context
from upscayl_cloud.services.results import reap_lost
from upscayl_cloud.storage.base import StorageError, StorageUnavailableError

log = logging.getLogger(__name__)
_T = TypeVar("_T")


@dataclass(frozen=True)
class SweepReport:
    uploads_deleted: int
    results_deleted: int
    tasks_reaped: int


def _in_use(storage_key: object) -> ColumnElement[bool]:
    """Whether a task that has not finished reads ``storage_key``."""
    return exists().where(
        and_(
            task_files.c.source_key == storage_key,
            task_files.c.task_id == tasks.c.id,
            tasks.c.status.in_(("pending", "processing")),
        )
    )


def _mark_deleted(ctx: Context, file_name: str, now: int) -> Row[Any] | None:
    """Mark one expired original deleted, unless a task needs it now; the row
    lock makes a start-task that names it wait (or this wait for it)."""
    with ctx.db.begin() as conn:
        row = conn.execute(
            select(uploads.c.storage_key, uploads.c.multipart_id)
            .where(
                uploads.c.file_name == file_name,
                uploads.c.deleted_at.is_(None),
                uploads.c.expires_at < now,
            )
            .with_for_update()
        ).first()
        # A statement of its own, after the lock: it sees a task committed
        # while this waited (PostgreSQL's READ COMMITTED).
        if row is None or conn.execute(select(_in_use(row.storage_key))).scalar():
            return None
        conn.execute(update(uploads).where(uploads.c.file_name == file_name).values(deleted_at=now))
    return row


def _delete_upload(ctx: Context, file_name: str, now: int) -> bool:
    row = _mark_deleted(ctx, file_name, now)
    if row is None:
        return False
    try:
        ctx.storage.delete(row.storage_key)
        if row.multipart_id:
            ctx.storage.abort_multipart(row.storage_key, row.multipart_id)
    except Exception:
        with ctx.db.begin() as conn:  # expired all the same: the next pass retries
            conn.execute(
                update(uploads)
                .where(uploads.c.file_name == file_name, uploads.c.deleted_at == now)
                .values(deleted_at=None)
            )
        raise
    return True


def _delete_result(ctx: Context, row: Row[Any], now: int) -> bool:
    for key in (row.result_key, row.thumbnail_key):
        if key:
            ctx.storage.delete(key)
    with ctx.db.begin() as conn:
        conn.execute(update(task_files).where(task_files.c.id == row.id).values(deleted_at=now))
    return True


def _each(items: Sequence[_T], delete: Callable[[_T], bool], what: str) -> int:
    """Delete every item, and count them. One the store refuses is logged and
    left for the next pass; an outage of the store ends the loop (every
    other item would wait out the same timeouts), so that the rest of the
    pass, the reaping above all, still runs."""
    done = 0
    for item in items:
        try:
            done += delete(item)
        except StorageUnavailableError as exc:
            log.warning("sweep: the store is unavailable, %s left for the next pass: %s", what, exc)
            break
        except StorageError as exc:
            log.warning(
                "sweep: could not delete an expired %s, left for the next pass: %s", what, exc
            )
    return done


def sweep(ctx: Context) -> SweepReport:
    """One pass over everything past its expiry."""
    now = now_ms()
    with ctx.db.begin() as conn:
        expired_uploads = (
            conn.execute(
                select(uploads.c.file_name).where(
                    uploads.c.deleted_at.is_(None),
                    uploads.c.expires_at < now,
                    ~_in_use(uploads.c.storage_key),
                )
            )
            .scalars()
            .all()
        )
        expired_results = conn.execute(
            select(task_files.c.id, task_files.c.result_key, task_files.c.thumbnail_key).where(
                task_files.c.deleted_at.is_(None),
                task_files.c.expires_at.is_not(None),
                task_files.c.expires_at < now,
            )
        ).all()
    return SweepReport(
        _each(expired_uploads, lambda name: _delete_upload(ctx, name, now), "original"),
        _each(expired_results, lambda row: _delete_result(ctx, row, now), "result"),
        reap_lost(ctx),
    )


class Sweeper:
    """Runs :func:`sweep` every ``sweep_interval_seconds`` on a daemon thread."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                report = sweep(self._ctx)
                if any((report.uploads_deleted, report.results_deleted, report.tasks_reaped)):
                    log.info("sweep: %s", report)
            except Exception:
                log.exception("sweep failed; retrying next interval")
            self._stop.wait(self._ctx.settings.sweep_interval_seconds)
