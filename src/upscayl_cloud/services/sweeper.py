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
the lock, which on SQLite is the whole database's), so marked deleted and
purged are two facts, ``deleted_at`` and ``purged_at``. Every pass purges
each row marked but not yet purged (whenever and by whom it was marked), and
records ``purged_at`` only once the store has deleted the object and dropped
its multipart upload, both of which succeed for what is already gone. A
process killed between the mark and the purge, a store that refuses one
object, or an outage of the store, therefore only delays the purge to a
later pass; the mark itself is never undone, since no task may use a row
marked deleted. An outage ends the pass's deletions; lost tasks are reaped
before any of them, so nothing the store does keeps their credits reserved.

Results are deleted first and marked after: a process killed between the two
leaves the row unmarked, and the next pass deletes the (gone) objects again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Row, and_, exists, select, update

from upscayl_cloud.db.engine import now_ms, sync_clock
from upscayl_cloud.db.tables import task_files, tasks, uploads
from upscayl_cloud.services.context import Context
from upscayl_cloud.services.results import reap_lost
from upscayl_cloud.storage.base import StorageError, StorageUnavailableError

log = logging.getLogger(__name__)
_T = TypeVar("_T")


@dataclass(frozen=True)
class SweepReport:
    #: Originals whose object this pass deleted (marked by it or earlier).
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


def _mark_deleted(ctx: Context, file_name: str, now: int) -> bool:
    """Mark one expired original deleted, unless a task needs it now; the row
    lock makes a start-task that names it wait (or this wait for it). The
    object is left for :func:`_purge_upload`."""
    with ctx.db.begin() as conn:
        row = conn.execute(
            select(uploads.c.storage_key)
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
            return False
        conn.execute(update(uploads).where(uploads.c.file_name == file_name).values(deleted_at=now))
    return True


def _unpurged(ctx: Context) -> Sequence[Row[Any]]:
    """Originals marked deleted whose object may still be in the store: marked
    by this pass, by a pass killed before its purge, or refused by the store."""
    with ctx.db.begin() as conn:
        return conn.execute(
            select(uploads.c.file_name, uploads.c.storage_key, uploads.c.multipart_id).where(
                uploads.c.purged_at.is_(None), uploads.c.deleted_at.is_not(None)
            )
        ).all()


def _purge_upload(ctx: Context, row: Row[Any]) -> bool:
    """Delete a marked original's object (and its multipart upload's parts),
    then record that it is gone; both store calls succeed when there is
    nothing left to delete, so a purge that failed halfway is simply redone."""
    ctx.storage.delete(row.storage_key)
    if row.multipart_id:
        ctx.storage.abort_multipart(row.storage_key, row.multipart_id)
    with ctx.db.begin() as conn:
        conn.execute(
            update(uploads).where(uploads.c.file_name == row.file_name).values(purged_at=now_ms())
        )
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
    pass still runs."""
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
    """One pass over everything past its expiry. Lost tasks are reaped first:
    whatever the store does with the deletions after, their credits are
    released."""
    reaped = reap_lost(ctx)
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
    for file_name in expired_uploads:
        _mark_deleted(ctx, file_name, now)
    return SweepReport(
        _each(_unpurged(ctx), lambda row: _purge_upload(ctx, row), "original"),
        _each(expired_results, lambda row: _delete_result(ctx, row, now), "result"),
        reaped,
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
                sync_clock(self._ctx.db)  # before the reaper compares leases
                report = sweep(self._ctx)
                if any((report.uploads_deleted, report.results_deleted, report.tasks_reaped)):
                    log.info("sweep: %s", report)
            except Exception:
                log.exception("sweep failed; retrying next interval")
            self._stop.wait(self._ctx.settings.sweep_interval_seconds)
