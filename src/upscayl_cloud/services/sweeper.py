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

One item that fails in a way no store is meant to (a bug) is logged with its
traceback and left for the next pass, as a refusal is: it came first again in
every pass, and ended each one, so retention stopped for good.

The local store's leftovers of killed writes (temporary files, upload
folders half removed) are reclaimed too, by age: :func:`reclaim_leftovers`.

A pass reads each kind of item in batches of :data:`BATCH_SIZE`, asked for
again after each batch (keyset order, so an item left for the next pass is
not read twice): it loaded the whole backlog at once, and a million expired
results held their rows in memory and kept the reaper waiting for hours,
since it ran only at the start of a pass. Lost tasks are now reaped before
the pass and between any two batches, so one is failed (and refunded)
within an interval and a batch whatever the backlog.

Every ``serve`` and ``worker`` process runs a :class:`Sweeper`, and each
deleted the same objects (twice the store calls for two processes). The
deletions of a pass are therefore made under a lock that one process holds
at a time, taken without waiting: a PostgreSQL session advisory lock on a
connection of its own, released when the pass ends, however it ends (and by
the server, should the process die), or on SQLite an ``flock`` on a file
beside the database, for processes sharing it on one machine. A process
that finds it held only reaps, which is safe anywhere at once: the reaper
fails a task with a guarded write that one process wins.

:meth:`Sweeper.stop` is heeded between two items of a pass: a pass through a
backlog ignored it to the end, and stop gave up waiting after 10 s.
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Engine,
    Row,
    Select,
    and_,
    exists,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.exc import SQLAlchemyError

from upscayl_cloud.db.engine import now_ms, reading, sync_clock
from upscayl_cloud.db.tables import task_files, tasks, uploads
from upscayl_cloud.services.context import Context
from upscayl_cloud.services.results import reap_lost
from upscayl_cloud.storage.base import StorageError, StorageUnavailableError
from upscayl_cloud.storage.local import LocalStorage

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: A leftover of a killed write is reclaimed once nothing has modified it for
#: this long. Every write into the local store copies from local disk (signed
#: PUTs and start-task's files are spooled whole first; results are work
#: files; a join reads parts), and modifies its file with each chunk: a day
#: is far past any stall of a live one, and leftovers cost only disk.
LEFTOVER_AGE_SECONDS = 24 * 3600
#: How often each :class:`Sweeper` looks for them (a walk of every folder of
#: the store, so not every pass); the first pass of a process looks too.
RECLAIM_INTERVAL_SECONDS = 3600

#: Rows a pass reads at a time, of each kind: what it holds in memory, and
#: the most it handles between two looks for lost tasks (two S3 deletes a
#: result at 5 ms each: about 2 s).
BATCH_SIZE = 200

#: Key of the PostgreSQL advisory lock of a pass's deletions (migrate.py's
#: key + 3; the secrets check has + 2).
SWEEP_LOCK_KEY = 0x75707363_61796C03

#: A row's place in its kind's order, where the next batch starts after.
_Cursor = tuple[Any, ...]


@dataclass(frozen=True)
class SweepReport:
    #: Originals whose object this pass deleted (marked by it or earlier).
    uploads_deleted: int
    results_deleted: int
    tasks_reaped: int
    #: Another process held the sweep lock: this pass only reaped.
    left_to_another: bool = False


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


def _batch(
    engine: Engine, query: Select[Any], order: Sequence[Any], after: _Cursor | None
) -> Sequence[Row[Any]]:
    """The next :data:`BATCH_SIZE` rows of ``query`` in ``order``, from after
    ``after``: an item left for the next pass (in use, refused) is not read
    again, and the order is its index's, so a pass reads the index once."""
    if after is not None:
        query = query.where(tuple_(*order) > tuple_(*after))
    with reading(engine) as conn:
        return conn.execute(query.order_by(*order).limit(BATCH_SIZE)).all()


def _expired_uploads(ctx: Context, now: int, after: _Cursor | None) -> Sequence[Row[Any]]:
    """Originals past their expiry, not yet marked, that no unfinished task
    names (in the order of ix_uploads_live_account_id)."""
    order = (uploads.c.account_id, uploads.c.expires_at, uploads.c.file_name)
    query = select(*order).where(
        uploads.c.deleted_at.is_(None),
        uploads.c.expires_at < now,
        ~_in_use(uploads.c.storage_key),
    )
    return _batch(ctx.db, query, order, after)


def _unpurged(ctx: Context, after: _Cursor | None) -> Sequence[Row[Any]]:
    """Originals marked deleted whose object may still be in the store: marked
    by this pass, by a pass killed before its purge, or refused by the store
    (in the order of ix_uploads_unpurged)."""
    order = (uploads.c.deleted_at, uploads.c.file_name)
    query = select(*order, uploads.c.storage_key, uploads.c.multipart_id).where(
        uploads.c.purged_at.is_(None), uploads.c.deleted_at.is_not(None)
    )
    return _batch(ctx.db, query, order, after)


def _expired_results(ctx: Context, now: int, after: _Cursor | None) -> Sequence[Row[Any]]:
    """Results past their expiry, not yet deleted (in the order of
    ix_task_files_live_expires_at)."""
    order = (task_files.c.expires_at, task_files.c.id)
    query = select(*order, task_files.c.result_key, task_files.c.thumbnail_key).where(
        task_files.c.deleted_at.is_(None),
        task_files.c.expires_at.is_not(None),
        task_files.c.expires_at < now,
    )
    return _batch(ctx.db, query, order, after)


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


def _each(
    items: Sequence[_T],
    delete: Callable[[_T], bool],
    what: str,
    stopping: Callable[[], bool] = lambda: False,
) -> tuple[int, bool]:
    """Delete every item, and count them; the flag says whether the loop went
    through (False when ``stopping`` or an outage ended it). One the store
    refuses is logged and left for the next pass; an outage of the store
    ends the loop (every other item would wait out the same timeouts), so
    that the rest of the pass still runs. Any other error is a bug, but one
    item's: logged with its traceback, and the loop goes on (see the
    module's doc)."""
    done = 0
    for item in items:
        if stopping():
            return done, False
        try:
            done += delete(item)
        except StorageUnavailableError as exc:
            log.warning("sweep: the store is unavailable, %s left for the next pass: %s", what, exc)
            return done, False
        except StorageError as exc:
            log.warning(
                "sweep: could not delete an expired %s, left for the next pass: %s", what, exc
            )
        except SQLAlchemyError:
            # The database's, not the item's: every other item would meet it
            # too, each after a store delete and the database's timeout (half
            # an hour a batch, a traceback each): it ends the pass.
            raise
        except Exception:
            log.exception("sweep: unexpected error on an expired %s, left for the next pass", what)
    return done, True


@contextmanager
def _advisory_lock(db: Engine) -> Iterator[bool]:
    """Whether this process holds the sweep lock of a PostgreSQL database,
    held until the block ends. A session lock, so that no transaction stays
    open for a whole pass; on a connection of its own, unlocked before it
    goes back to the pool (where the lock would outlive the pass), and
    discarded instead when that fails: its session ends, and the lock with it."""
    with db.connect() as connection:
        lock = text("SELECT pg_try_advisory_lock(:key)")
        held = bool(connection.execute(lock, {"key": SWEEP_LOCK_KEY}).scalar())
        connection.commit()
        try:
            yield held
        finally:
            if held:
                try:
                    unlock = text("SELECT pg_advisory_unlock(:key)")
                    connection.execute(unlock, {"key": SWEEP_LOCK_KEY})
                    connection.commit()
                except Exception as exc:
                    log.warning("sweep: could not unlock; dropping the connection: %s", exc)
                    connection.invalidate()


@contextmanager
def _file_lock(database: str | None) -> Iterator[bool]:
    """Whether this process holds the sweep lock of a SQLite database, the
    ``flock`` of a file beside it (released by the kernel should the process
    die), held until the block ends."""
    if not database or database == ":memory:":
        yield True
        return
    path = Path(database).with_name(Path(database).name + ".sweep-lock")
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sweeping_alone(db: Engine) -> Any:
    """The sweep lock of ``db`` (see the module's doc), as a context manager
    that says whether this process holds it."""
    if db.dialect.name == "postgresql":
        return _advisory_lock(db)
    return _file_lock(db.url.database)


class _Pass:
    """One pass: its time, its stop, and the reaper run between batches."""

    def __init__(self, ctx: Context, stop: threading.Event | None) -> None:
        self._ctx = ctx
        self._stop = stop
        self.now = now_ms()
        self.reaped = 0
        #: Whether a batch was handled since the reaper last ran.
        self._worked = True

    def stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def reap(self) -> None:
        self.reaped += reap_lost(self._ctx)
        self._worked = False

    def in_batches(
        self,
        fetch: Callable[[_Cursor | None], Sequence[Row[Any]]],
        cursor: Callable[[Row[Any]], _Cursor],
        handle: Callable[[Sequence[Row[Any]]], tuple[int, bool]],
    ) -> int:
        """Fetch and handle batches until none is left, ``handle`` says the
        rest must wait (an outage, a stop), or the pass is stopped; the
        reaper runs before each batch that follows another. Returns the
        count ``handle`` gave."""
        done, after = 0, None
        while not self.stopping():
            if self._worked:
                self.reap()
            rows = fetch(after)
            if not rows:
                break
            self._worked = True
            count, went_through = handle(rows)
            done += count
            if not went_through or len(rows) < BATCH_SIZE:
                break
            after = cursor(rows[-1])
        return done

    def mark(self, rows: Sequence[Row[Any]]) -> tuple[int, bool]:
        """Mark a batch of expired originals deleted (no store call: an error
        here is the database's, and ends the pass)."""
        marked = 0
        for row in rows:
            if self.stopping():
                return marked, False
            marked += _mark_deleted(self._ctx, row.file_name, self.now)
        return marked, True


def sweep(ctx: Context, stop: threading.Event | None = None) -> SweepReport:
    """One pass over everything past its expiry, in batches, ended early
    once ``stop`` is set. Lost tasks are reaped first, whatever the store
    does with the deletions after, and between batches; the deletions are
    left to another process that is making them (see the module's doc)."""
    run = _Pass(ctx, stop)
    run.reap()
    with _sweeping_alone(ctx.db) as alone:
        if not alone:
            return SweepReport(0, 0, run.reaped, left_to_another=True)
        run.in_batches(
            lambda after: _expired_uploads(ctx, run.now, after),
            lambda row: (row.account_id, row.expires_at, row.file_name),
            run.mark,
        )
        purged = run.in_batches(
            lambda after: _unpurged(ctx, after),
            lambda row: (row.deleted_at, row.file_name),
            lambda rows: _each(rows, lambda row: _purge_upload(ctx, row), "original", run.stopping),
        )
        deleted = run.in_batches(
            lambda after: _expired_results(ctx, run.now, after),
            lambda row: (row.expires_at, row.id),
            lambda rows: _each(
                rows, lambda row: _delete_result(ctx, row, run.now), "result", run.stopping
            ),
        )
    return SweepReport(purged, deleted, run.reaped)


def reclaim_leftovers(ctx: Context) -> int:
    """Remove the local store's leftovers of writes killed mid-way that no
    write has touched for :data:`LEFTOVER_AGE_SECONDS`; returns how many.
    The S3 store leaves none of its own (its unfinished multipart uploads
    are the bucket lifecycle rule's, docs/deployment.md)."""
    if not isinstance(ctx.storage, LocalStorage):
        return 0
    # The file system's clock, which set the files' times, not the database's.
    return ctx.storage.reclaim_leftovers(time.time() - LEFTOVER_AGE_SECONDS)


class Sweeper:
    """Runs :func:`sweep` every ``sweep_interval_seconds`` on a daemon thread,
    and :func:`reclaim_leftovers` every :data:`RECLAIM_INTERVAL_SECONDS`;
    :meth:`stop` ends a pass in progress at its next item."""

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
        reclaim_at = time.monotonic()
        while not self._stop.is_set():
            try:
                sync_clock(self._ctx.db)  # before the reaper compares leases
                report = sweep(self._ctx, self._stop)
                if any((report.uploads_deleted, report.results_deleted, report.tasks_reaped)):
                    log.info("sweep: %s", report)
            except Exception:
                log.exception("sweep failed; retrying next interval")
            if self._stop.is_set():
                break
            if time.monotonic() >= reclaim_at:
                reclaim_at = time.monotonic() + RECLAIM_INTERVAL_SECONDS
                self._reclaim()
            self._stop.wait(self._ctx.settings.sweep_interval_seconds)

    def _reclaim(self) -> None:
        try:
            if reclaimed := reclaim_leftovers(self._ctx):
                log.info("sweep: removed %d leftovers of interrupted writes", reclaimed)
        except Exception:
            log.exception("reclaiming leftovers failed; retrying in an hour")
