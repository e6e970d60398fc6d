"""Retention: expired originals and results are deleted; queued inputs are
kept, including by a start-task still in flight when its original expires;
an original marked deleted is purged by a later pass whatever stopped the
pass that marked it. A backlog is swept in batches, with lost tasks reaped
between them, by one process at a time, and a stop ends a pass."""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import event, func, insert, select, text, update
from sqlalchemy.exc import OperationalError

from support.images import png_bytes
from support.postgres import until_a_lock_is_awaited
from support.tasks import queued_task, uploaded
from tests.storage.refusing import entries_fixed
from tests.storage.unreachable import closed_endpoint
from upscayl_cloud.db.engine import now_ms
from upscayl_cloud.db.tables import task_files, tasks, uploads
from upscayl_cloud.services import keys, sweeper
from upscayl_cloud.services import uploads as uploads_service
from upscayl_cloud.services.context import Context, build_context
from upscayl_cloud.services.errors import BadRequestError
from upscayl_cloud.services.keys import Principal
from upscayl_cloud.services.sweeper import sweep
from upscayl_cloud.services.tasks import TaskOptions, start_task
from upscayl_cloud.services.uploads import storage_key
from upscayl_cloud.storage.base import CompletedPart, MultipartError, StorageError
from upscayl_cloud.storage.local import LocalStorage
from upscayl_cloud.storage.s3 import S3Storage
from upscayl_cloud.storage.s3client import make_client

YEAR_MS = 365 * 24 * 3_600_000


def _sweep_a_year_later(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweeper's clock a year ahead: every original has expired for it."""
    monkeypatch.setattr(sweeper, "now_ms", lambda: now_ms() + YEAR_MS)


def test_expired_upload_is_deleted_unless_a_task_waits_for_it(
    ctx: Context, principal: Principal
) -> None:
    loose = uploaded(ctx, principal)
    task_id = queued_task(ctx, principal)
    with ctx.db.begin() as conn:
        conn.execute(update(uploads).values(expires_at=now_ms() - 1))
        needed = conn.execute(
            select(task_files.c.file_name).where(task_files.c.task_id == task_id)
        ).scalar_one()
    report = sweep(ctx)
    assert report.uploads_deleted == 1
    assert ctx.storage.size(storage_key(principal.account_id, loose)) is None
    assert ctx.storage.size(storage_key(principal.account_id, needed)) is not None


def test_expired_results_are_deleted(ctx: Context, principal: Principal) -> None:
    task_id = queued_task(ctx, principal)
    ctx.storage.write_stream("results/a/t/1/0.png", iter([b"x"]), 10)
    with ctx.db.begin() as conn:
        conn.execute(
            update(task_files)
            .where(task_files.c.task_id == task_id)
            .values(result_key="results/a/t/1/0.png", expires_at=now_ms() - 1)
        )
    assert sweep(ctx).results_deleted == 1
    assert ctx.storage.size("results/a/t/1/0.png") is None
    assert sweep(ctx).results_deleted == 0


def test_a_start_task_in_flight_keeps_its_original(
    ctx: Context, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    # start-task is held inside its transaction, its original checked and
    # locked, the task not yet inserted; a sweep for which the original has
    # expired runs meanwhile, and must wait for it and then keep the file.
    name = uploaded(ctx, principal)
    inside, go_on = threading.Event(), threading.Event()

    def hold_the_insert(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO TASKS") and not inside.is_set():
            inside.set()
            go_on.wait(30)

    started: list[str] = []
    starter = threading.Thread(
        target=lambda: started.append(
            start_task(ctx, principal, TaskOptions(), [{"fileName": name}])
        )
    )
    reports: list[sweeper.SweepReport] = []
    sweeping = threading.Thread(target=lambda: reports.append(sweep(ctx)))
    event.listen(ctx.db, "before_cursor_execute", hold_the_insert)
    try:
        starter.start()
        assert inside.wait(30), "start-task never reached its insert"
        _sweep_a_year_later(monkeypatch)
        sweeping.start()
        until_a_lock_is_awaited(ctx.db, "the sweep (on start-task's row lock)")
    finally:
        go_on.set()
        for thread in (starter, sweeping):
            if thread.ident is not None:
                thread.join(30)
        event.remove(ctx.db, "before_cursor_execute", hold_the_insert)
    assert started and reports
    assert reports[0].uploads_deleted == 0
    assert ctx.storage.size(storage_key(principal.account_id, name)) is not None
    with ctx.db.begin() as conn:
        assert (
            conn.execute(select(uploads.c.deleted_at).where(uploads.c.file_name == name)).scalar()
            is None
        )


class _SweptDuringTheCheck:
    """The real store, but the sweep (for which the original has expired)
    runs inside the first call of one of its methods, before or after the
    real call: it lands between start-task's steps."""

    def __init__(self, ctx: Context, method: str, when: str) -> None:
        self._ctx, self._method, self._when = ctx, method, when
        self.swept: sweeper.SweepReport | None = None

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._ctx.storage, name)
        if name != self._method:
            return real

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.swept is None and self._when == "before":
                self.swept = sweep(self._ctx)
            result = real(*args, **kwargs)
            if self.swept is None:
                self.swept = sweep(self._ctx)
            return result

        return call


@pytest.mark.parametrize(
    ("method", "when"), [("size", "before"), ("size", "after"), ("read_head", "after")]
)
def test_an_original_swept_during_start_task_is_refused_not_charged(
    ctx: Context, principal: Principal, monkeypatch: pytest.MonkeyPatch, method: str, when: str
) -> None:
    """Whenever the sweep lands (before the size is read, between the size
    and the header, after the header), start-task says the upload expired:
    not that it was never uploaded, not a 500, and no task is charged."""
    name = uploaded(ctx, principal)
    before = keys.account_credits(ctx, principal.account_id)
    _sweep_a_year_later(monkeypatch)
    store = _SweptDuringTheCheck(ctx, method, when)
    with pytest.raises(BadRequestError, match="the upload has expired; upload it again"):
        start_task(replace(ctx, storage=store), principal, TaskOptions(), [{"fileName": name}])
    assert store.swept is not None and store.swept.uploads_deleted == 1
    assert keys.account_credits(ctx, principal.account_id) == before
    with ctx.db.begin() as conn:
        assert conn.execute(select(func.count()).select_from(tasks)).scalar() == 0


def test_an_original_the_store_could_not_delete_is_swept_again(
    ctx: Context, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store outage ends the pass's deletions (the rest still runs); the
    original stays marked deleted but not purged, and the next pass deletes it."""
    name = uploaded(ctx, principal)
    _sweep_a_year_later(monkeypatch)
    dead = make_client(
        closed_endpoint(), "us-east-1", "key", "secret", connect_timeout=1, max_attempts=1
    )
    assert sweep(replace(ctx, storage=S3Storage(dead, "bucket"))).uploads_deleted == 0
    deleted_at, purged_at = _marks(ctx, name)
    assert deleted_at is not None and purged_at is None
    assert ctx.storage.size(storage_key(principal.account_id, name)) is not None
    assert sweep(ctx).uploads_deleted == 1
    assert ctx.storage.size(storage_key(principal.account_id, name)) is None
    assert _marks(ctx, name)[1] is not None


def _marks(ctx: Context, file_name: str) -> tuple[int | None, int | None]:
    """An upload's ``deleted_at`` and ``purged_at``."""
    with ctx.db.begin() as conn:
        row = conn.execute(
            select(uploads.c.deleted_at, uploads.c.purged_at).where(
                uploads.c.file_name == file_name
            )
        ).one()
    return row.deleted_at, row.purged_at


def test_an_original_marked_by_a_killed_sweep_is_purged_by_the_next(
    ctx: Context, principal: Principal
) -> None:
    """A sweep killed after its mark committed, before the store call: the
    mark alone is exactly what such a process leaves behind."""
    name = uploaded(ctx, principal)
    key = storage_key(principal.account_id, name)
    assert sweeper._mark_deleted(ctx, name, now_ms() + YEAR_MS)
    assert ctx.storage.size(key) is not None
    assert sweep(ctx).uploads_deleted == 1
    assert ctx.storage.size(key) is None
    deleted_at, purged_at = _marks(ctx, name)
    assert deleted_at is not None and purged_at is not None
    assert sweep(ctx).uploads_deleted == 0


@pytest.mark.parametrize("cut_short", [False, True])
def test_an_unfinished_multipart_upload_is_dropped_with_its_original(
    ctx: Context, principal: Principal, monkeypatch: pytest.MonkeyPatch, cut_short: bool
) -> None:
    """Its parts go too; and a pass killed after the store calls, before
    recording the purge, leaves nothing that makes the next one fail: the
    object and the upload are already gone, which counts as deleted."""
    link = uploads_service.request_upload(
        ctx, principal, "http://x", "a.png", "image/png", 10, multipart=True
    )
    key = storage_key(principal.account_id, link.file_name)
    with ctx.db.begin() as conn:
        upload_id = conn.execute(
            select(uploads.c.multipart_id).where(uploads.c.file_name == link.file_name)
        ).scalar_one()
    _sweep_a_year_later(monkeypatch)
    if cut_short:
        assert sweeper._mark_deleted(ctx, link.file_name, sweeper.now_ms())
        ctx.storage.delete(key)
        ctx.storage.abort_multipart(key, upload_id)
    assert sweep(ctx).uploads_deleted == 1
    assert _marks(ctx, link.file_name)[1] is not None
    with pytest.raises(MultipartError, match="unknown"):
        ctx.storage.complete_multipart(key, upload_id, [CompletedPart(1, '"x"')])


def test_a_discarded_direct_upload_is_recorded_purged(ctx: Context, principal: Principal) -> None:
    """start-task's refused direct upload is deleted, and marked deleted and
    purged, by ``discard``: the sweeper neither deletes it again nor counts it."""
    name = uploads_service.save_direct(ctx, principal, "a.png", "image/png", iter([png_bytes()]))
    uploads_service.discard(ctx, principal, name)
    deleted_at, purged_at = _marks(ctx, name)
    assert deleted_at is not None and purged_at == deleted_at
    assert ctx.storage.size(storage_key(principal.account_id, name)) is None
    assert sweep(ctx).uploads_deleted == 0


class _RefusesOneKey:
    """The real store, except that deleting one key raises ``error`` (by
    default a store's AccessDenied). A stand-in (a mock, named so): as root,
    no file permission makes a real unlink fail, a store's per-object
    AccessDenied cannot be set up on loopback, and an unknown bug in a store
    (the errors found that escaped one are fixed) cannot be provoked."""

    def __init__(self, ctx: Context, key: str, error: Exception | None = None) -> None:
        self._ctx, self._key = ctx, key
        self._error = error or StorageError(f"{key}: AccessDenied")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx.storage, name)

    def delete(self, key: str) -> None:
        if key == self._key:
            raise self._error
        self._ctx.storage.delete(key)


def test_one_object_the_store_refuses_does_not_stop_the_sweep(
    ctx: Context, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refused original stays marked deleted (no task may use it), its
    object in the store, and is purged by the first pass the store allows."""
    stuck, other = uploaded(ctx, principal), uploaded(ctx, principal)
    _sweep_a_year_later(monkeypatch)
    refusing = _RefusesOneKey(ctx, storage_key(principal.account_id, stuck))
    assert sweep(replace(ctx, storage=refusing)).uploads_deleted == 1
    assert ctx.storage.size(storage_key(principal.account_id, other)) is None
    assert ctx.storage.size(storage_key(principal.account_id, stuck)) is not None
    deleted_at, purged_at = _marks(ctx, stuck)
    assert deleted_at is not None and purged_at is None
    with pytest.raises(BadRequestError, match="no such uploaded file"):
        start_task(ctx, principal, TaskOptions(), [{"fileName": stuck}])
    assert sweep(ctx).uploads_deleted == 1  # still unpurged, deleted once the store agrees
    assert ctx.storage.size(storage_key(principal.account_id, stuck)) is None
    assert _marks(ctx, stuck)[1] is not None


def test_an_object_the_local_store_cannot_delete_stops_neither_the_pass_nor_the_reaping(
    ctx: Context, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real refusal: a folder where an original's file should be. The OS's
    error ended the pass before the reaper ran, so a task lost on its last
    attempt kept its credits reserved for as long as the folder stayed."""
    from upscayl_cloud.queue.lease import claim

    task_id = queued_task(ctx, principal)
    assert claim(ctx.db, "dies", 30, ctx.settings.max_attempts) is not None
    with ctx.db.begin() as conn:
        conn.execute(
            update(tasks)
            .where(tasks.c.id == task_id)
            .values(attempts=ctx.settings.max_attempts, lease_until=now_ms() - 1)
        )
    assert keys.account_credits(ctx, principal.account_id) == 9
    stuck, other = uploaded(ctx, principal), uploaded(ctx, principal)
    blocked = ctx.storage.path_of(storage_key(principal.account_id, stuck))
    blocked.unlink()
    blocked.mkdir()
    (blocked / "inside").write_bytes(b"x")
    _sweep_a_year_later(monkeypatch)

    report = sweep(ctx)
    assert report.tasks_reaped == 1
    with ctx.db.begin() as conn:
        assert conn.execute(select(tasks.c.status).where(tasks.c.id == task_id)).scalar() == (
            "failed"
        )
    assert keys.account_credits(ctx, principal.account_id) == 10
    assert ctx.storage.size(storage_key(principal.account_id, other)) is None
    assert blocked.is_dir() and _marks(ctx, stuck)[1] is None  # left for a later pass


def _expired_result(ctx: Context, principal: Principal, key: str) -> None:
    """A finished task's result under ``key``, past its expiry."""
    task_id = queued_task(ctx, principal)
    ctx.storage.write_stream(key, iter([b"x"]), 10)
    with ctx.db.begin() as conn:
        conn.execute(
            update(task_files)
            .where(task_files.c.task_id == task_id)
            .values(result_key=key, expires_at=now_ms() - 1)
        )


def test_an_upload_the_local_store_cannot_abort_stops_neither_the_pass_nor_retention(
    ctx: Context, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real refusal (tests/storage/refusing.py) to remove an abandoned
    multipart upload's parts. The OS's error ended the pass before the
    results, and every later pass too (that row came first again): expired
    results were never deleted."""
    link = uploads_service.request_upload(
        ctx, principal, "http://x", "a.png", "image/png", 10, multipart=True
    )
    _expired_result(ctx, principal, "results/a/t/1/0.png")
    _sweep_a_year_later(monkeypatch)
    assert isinstance(ctx.storage, LocalStorage)
    with entries_fixed(ctx.storage.root / ".multipart"):
        report = sweep(ctx)
    assert (report.uploads_deleted, report.results_deleted) == (0, 1)
    assert ctx.storage.size("results/a/t/1/0.png") is None
    deleted_at, purged_at = _marks(ctx, link.file_name)
    assert deleted_at is not None and purged_at is None
    assert sweep(ctx).uploads_deleted == 1  # allowed again: purged
    assert _marks(ctx, link.file_name)[1] is not None
    assert list((ctx.storage.root / ".multipart").iterdir()) == []


def test_an_unexpected_error_on_one_item_is_logged_and_the_pass_goes_on(
    ctx: Context,
    principal: Principal,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One item must never stop retention: the others of its kind and the
    results are deleted, the error is logged with its traceback (not
    swallowed), and the item is purged by the first pass that can."""
    stuck, other = uploaded(ctx, principal), uploaded(ctx, principal)
    _expired_result(ctx, principal, "results/a/t/1/0.png")
    _sweep_a_year_later(monkeypatch)
    breaking = _RefusesOneKey(
        ctx, storage_key(principal.account_id, stuck), RuntimeError("a bug in the store")
    )
    with caplog.at_level(logging.ERROR, logger=sweeper.__name__):
        report = sweep(replace(ctx, storage=breaking))
    assert (report.uploads_deleted, report.results_deleted) == (1, 1)
    assert ctx.storage.size(storage_key(principal.account_id, other)) is None
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "unexpected error on an expired original" in record.getMessage()
    assert record.exc_info is not None and "a bug in the store" in str(record.exc_info[1])
    assert _marks(ctx, stuck)[1] is None
    assert sweep(ctx).uploads_deleted == 1
    assert ctx.storage.size(storage_key(principal.account_id, stuck)) is None


def test_the_database_going_away_mid_pass_ends_it(
    ctx: Context, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database error is no one item's bug: the pass ends at the first,
    as it did before the per-item catch, instead of deleting every other
    object of the batch and waiting out the database's timeout for each
    (with a traceback blaming the item). The database failing every new
    transaction after the first delete stands in for its outage."""
    keys = [f"results/a/t/1/{n}.png" for n in range(4)]
    for key in keys:
        _expired_result(ctx, principal, key)
    _sweep_a_year_later(monkeypatch)

    def down(_: object) -> None:
        raise OperationalError("BEGIN", {}, Exception("the database went away"))

    def outage_after_the_first(number: int, _: str) -> None:
        if number == 2:
            event.listen(ctx.db, "begin", down)

    store = _RecordingStore(ctx, outage_after_the_first)
    try:
        with pytest.raises(OperationalError):
            sweep(replace(ctx, storage=store))
    finally:
        if event.contains(ctx.db, "begin", down):
            event.remove(ctx.db, "begin", down)
    assert len(store.deleted()) == 2
    assert sweep(ctx).results_deleted == len(keys) - 1


def _temporary_file(store: LocalStorage, key: str, age_seconds: float) -> str:
    """What a write killed mid-way leaves beside ``key``: its temporary file
    (made as ``LocalStorage._temporary_beside`` makes it), last modified
    ``age_seconds`` ago (``os.utime``, standing in for waiting)."""
    folder = store.path_of(key).parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    os.close(fd)
    os.utime(name, (time.time() - age_seconds,) * 2)
    return name


def test_the_sweeper_reclaims_leftovers_of_killed_writes_past_a_day(ctx: Context) -> None:
    """From its first pass on (a process starting after a crash); one
    modified within the day may be a live write's, and stays. (How the
    store finds and removes them: tests/storage/test_local.py.)"""
    assert isinstance(ctx.storage, LocalStorage)
    stale = _temporary_file(ctx.storage, "uploads/a/x.png", sweeper.LEFTOVER_AGE_SECONDS + 60)
    fresh = _temporary_file(ctx.storage, "uploads/b/y.png", sweeper.LEFTOVER_AGE_SECONDS - 60)
    running = sweeper.Sweeper(ctx)
    running.start()
    try:
        deadline = time.monotonic() + 30
        while os.path.exists(stale) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        running.stop()
    assert not os.path.exists(stale) and os.path.exists(fresh)
    assert not (ctx.storage.root / "uploads" / "a").exists()  # the folder it kept
    assert sweeper.reclaim_leftovers(ctx) == 0


class _RecordingStore:
    """The real store, every call passed on; it records each ``delete`` and
    ``delete_prefix`` (the reaper's) in ``events``, in order, refuses the
    keys in ``refused`` as a store's AccessDenied would, and runs
    ``on_delete`` before each delete, with its number (from 1) and key. A stand-in (named
    so) for what cannot be provoked for real: a chosen moment inside a pass
    to act at, and one object refused among others (see _RefusesOneKey)."""

    def __init__(
        self,
        ctx: Context,
        on_delete: Callable[[int, str], None] | None = None,
        refused: frozenset[str] = frozenset(),
    ) -> None:
        self._ctx, self._on_delete, self._refused = ctx, on_delete, refused
        self.events: list[tuple[str, str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx.storage, name)

    def delete(self, key: str) -> None:
        if self._on_delete is not None:
            self._on_delete(len(self.deleted()) + 1, key)
        self.events.append(("delete", key))
        if key in self._refused:
            raise StorageError(f"{key}: AccessDenied")
        self._ctx.storage.delete(key)

    def delete_prefix(self, prefix: str) -> None:
        self.events.append(("delete_prefix", prefix))
        self._ctx.storage.delete_prefix(prefix)

    def deleted(self) -> list[str]:
        """The keys ``delete`` was asked for, in order, repeats included."""
        return [key for kind, key in self.events if kind == "delete"]


def _result_rows(ctx: Context, task_id: str, keys: list[str], expires_at: int) -> None:
    """Results of ``task_id`` stored under ``keys`` (real objects), all
    expiring at ``expires_at``: rows inserted after others sort after them."""
    for key in keys:
        ctx.storage.write_stream(key, iter([b"x"]), 10)
    with ctx.db.begin() as conn:
        conn.execute(
            insert(task_files),
            [
                {
                    "task_id": task_id,
                    "position": 100 + n,
                    "file_name": key.replace("/", "-"),
                    "original_file_name": "a.png",
                    "file_type": "image/png",
                    "file_size": 1,
                    "source_key": "named-by-no-upload",
                    "status": "completed",
                    "result_key": key,
                    "expires_at": expires_at,
                }
                for n, key in enumerate(keys)
            ],
        )


def _live_results(ctx: Context) -> int:
    """How many results with an expiry are not yet deleted."""
    with ctx.db.begin() as conn:
        return conn.execute(
            select(func.count())
            .select_from(task_files)
            .where(task_files.c.expires_at.is_not(None), task_files.c.deleted_at.is_(None))
        ).scalar_one()


def test_a_backlog_larger_than_a_batch_is_swept_batch_by_batch(
    ctx: Context, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each kind is read a batch at a time, and asked for again after each:
    a result that expires while the results' first batch is being deleted
    (sorting after the others) is deleted by that pass, which a pass
    holding the whole backlog it had read never did. Items left for the
    next pass (an original in use, a refused object) are read once, not
    again each batch, and end nothing."""
    monkeypatch.setattr(sweeper, "BATCH_SIZE", 3)
    task_id = queued_task(ctx, principal)  # its original is in use: kept
    loose = [uploaded(ctx, principal) for _ in range(7)]
    refused_original = storage_key(principal.account_id, loose[0])
    expires_at = now_ms() - 1000
    backlog = [f"results/a/t/1/{n}.png" for n in range(8)]
    _result_rows(ctx, task_id, backlog, expires_at)
    late = "results/a/t/1/late.png"

    def expire_one_more(_count: int, key: str) -> None:
        if key == backlog[0]:  # the results' first batch has been read
            _result_rows(ctx, task_id, [late], expires_at)

    store = _RecordingStore(ctx, expire_one_more, refused=frozenset({refused_original, backlog[4]}))
    _sweep_a_year_later(monkeypatch)
    report = sweep(replace(ctx, storage=store))

    assert ctx.storage.size(late) is None  # read by a later batch of this pass
    assert all(ctx.storage.size(key) is None for key in backlog if key != backlog[4])
    assert all(n == 1 for n in Counter(store.deleted()).values())
    assert (report.uploads_deleted, report.results_deleted) == (6, 8)
    for name in loose[1:]:
        assert ctx.storage.size(storage_key(principal.account_id, name)) is None
    assert ctx.storage.size(refused_original) is not None
    assert _marks(ctx, loose[0])[1] is None  # marked, left unpurged for the next pass
    assert ctx.storage.size(backlog[4]) is not None and _live_results(ctx) == 1
    with ctx.db.begin() as conn:
        source = conn.execute(
            select(task_files.c.file_name).where(
                task_files.c.task_id == task_id, task_files.c.result_key.is_(None)
            )
        ).scalar_one()
    assert _marks(ctx, source) == (None, None)
    assert sweep(ctx) == sweeper.SweepReport(1, 1, 0)  # the next pass takes the refused ones


def _lose_on_last_attempt(ctx: Context, principal: Principal) -> str:
    """A task whose worker died on its last allowed attempt: claimed, then
    its lease past (what a dead worker leaves), its credit still reserved."""
    from upscayl_cloud.queue.lease import claim

    task_id = queued_task(ctx, principal)
    claimed = claim(ctx.db, "dies", 30, ctx.settings.max_attempts)
    assert claimed is not None and claimed.task_id == task_id
    with ctx.db.begin() as conn:
        conn.execute(
            update(tasks)
            .where(tasks.c.id == task_id)
            .values(attempts=ctx.settings.max_attempts, lease_until=now_ms() - 1)
        )
    return task_id


def test_a_task_lost_during_a_backlog_is_reaped_before_the_backlog_is_done(
    ctx: Context, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task lost while a pass works through a backlog is reaped (failed,
    its credit released) before the next batch, not after the last: the
    reaper ran only at the start of a pass, so a million expired results
    kept credits reserved for hours. The reaper's deletion of the lost
    task's outputs marks when it ran, among the pass's deletes."""
    monkeypatch.setattr(sweeper, "BATCH_SIZE", 3)
    holder = queued_task(ctx, principal)
    with ctx.db.begin() as conn:  # finished: the lost task is the one a claim takes
        conn.execute(update(tasks).where(tasks.c.id == holder).values(status="completed"))
    backlog = [f"results/a/t/1/{n}.png" for n in range(10)]
    _result_rows(ctx, holder, backlog, now_ms() - 1000)
    lost: list[str] = []

    def lose_a_task(count: int, _key: str) -> None:
        if count == 1:
            lost.append(_lose_on_last_attempt(ctx, principal))
            assert keys.account_credits(ctx, principal.account_id) == 8

    store = _RecordingStore(ctx, lose_a_task)
    report = sweep(replace(ctx, storage=store))

    assert lost and report.tasks_reaped == 1
    reaped_at = store.events.index(("delete_prefix", f"results/{principal.account_id}/{lost[0]}/1"))
    before = [key for kind, key in store.events[:reaped_at] if kind == "delete"]
    after = [key for kind, key in store.events[reaped_at:] if kind == "delete"]
    assert len(before) == sweeper.BATCH_SIZE  # reaped after the first batch
    assert after  # the backlog was not done yet
    assert report.results_deleted == len(backlog) and _live_results(ctx) == 0
    with ctx.db.begin() as conn:
        assert conn.execute(select(tasks.c.status).where(tasks.c.id == lost[0])).scalar() == (
            "failed"
        )
    assert keys.account_credits(ctx, principal.account_id) == 9  # the holder's credit only


def test_two_sweepers_do_not_delete_the_same_objects(
    ctx: Context, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process's pass, run while this one's is deleting, leaves the
    deletions to it and only reaps: every serve and worker process sweeps,
    and each deleted every expired object (twice the store calls for two).
    The other process is a second context (engine, pool, lock of its own)
    on the same database and store."""
    monkeypatch.setattr(sweeper, "BATCH_SIZE", 3)
    task_id = queued_task(ctx, principal)
    originals = [uploaded(ctx, principal) for _ in range(4)]
    backlog = [f"results/a/t/1/{n}.png" for n in range(6)]
    _result_rows(ctx, task_id, backlog, now_ms() - 1000)
    _sweep_a_year_later(monkeypatch)
    other = build_context(ctx.settings)
    other_store = _RecordingStore(other)
    other_reports: list[sweeper.SweepReport] = []

    def the_other_sweeps(count: int, _key: str) -> None:
        if count == 1:
            thread = threading.Thread(
                target=lambda: other_reports.append(sweep(replace(other, storage=other_store)))
            )
            thread.start()
            thread.join(30)

    store = _RecordingStore(ctx, the_other_sweeps)
    try:
        report = sweep(replace(ctx, storage=store))
    finally:
        other.db.dispose()

    per_key = Counter(store.deleted() + other_store.deleted())
    assert [key for key, n in per_key.items() if n > 1] == []
    assert other_store.deleted() == [] and other_reports
    assert other_reports[0].left_to_another
    assert (report.uploads_deleted, report.results_deleted) == (4, 6)
    assert not report.left_to_another
    expected = {storage_key(principal.account_id, name) for name in originals} | set(backlog)
    assert set(per_key) == expected
    assert all(ctx.storage.size(key) is None for key in expected)


def test_stop_ends_a_pass_between_items_of_a_backlog(
    ctx: Context, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stop() during a pass through a backlog returns with the backlog not
    done, its thread ended: a pass ignored the stop to its end (and stop()
    gave up waiting after 10 s). The next pass takes up the rest."""
    monkeypatch.setattr(sweeper, "BATCH_SIZE", 3)
    holder = queued_task(ctx, principal)
    backlog = [f"results/a/t/1/{n}.png" for n in range(10)]
    _result_rows(ctx, holder, backlog, now_ms() - 1000)
    in_pass = threading.Event()

    def until_stopped(count: int, _key: str) -> None:
        if count == 1:
            in_pass.set()
            # The stop's own event (private): set by stop() just before it joins.
            running._stop.wait(30)

    store = _RecordingStore(ctx, until_stopped)
    running = sweeper.Sweeper(replace(ctx, storage=store))
    running.start()
    try:
        assert in_pass.wait(30), "the pass never deleted anything"
    finally:
        running.stop()
    assert not running._thread.is_alive()
    left = len(backlog) - len(store.deleted())
    assert left > 0 and _live_results(ctx) == left
    assert sweep(ctx).results_deleted == left and _live_results(ctx) == 0


class _Interrupted(BaseException):
    """What no part of a pass handles (as KeyboardInterrupt or SystemExit)."""


def _advisory_locks(ctx: Context) -> int:
    """Advisory locks held in ``ctx``'s PostgreSQL database."""
    with ctx.db.begin() as conn:
        return conn.execute(
            text(
                "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                "WHERE l.locktype = 'advisory' AND d.datname = current_database()"
            )
        ).scalar_one()


def test_the_sweep_lock_is_released_however_a_pass_ends(
    ctx: Context, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass ended by an error leaves the lock free for the next, here or in
    another process; on PostgreSQL no connection back in the pool keeps the
    session lock (the next user of that connection would hold it, and every
    other process would skip its deletions for good)."""
    monkeypatch.setattr(sweeper, "BATCH_SIZE", 3)
    holder = queued_task(ctx, principal)
    backlog = [f"results/a/t/1/{n}.png" for n in range(5)]
    _result_rows(ctx, holder, backlog, now_ms() - 1000)

    def interrupt(_count: int, _key: str) -> None:
        raise _Interrupted

    with pytest.raises(_Interrupted):
        sweep(replace(ctx, storage=_RecordingStore(ctx, interrupt)))
    postgres = ctx.db.dialect.name == "postgresql"
    if postgres:
        assert _advisory_locks(ctx) == 0
    other = build_context(ctx.settings)
    try:
        report = sweep(other)
    finally:
        other.db.dispose()
    assert not report.left_to_another and report.results_deleted == len(backlog)
    report = sweep(ctx)
    assert not report.left_to_another and report.results_deleted == 0
    if postgres:
        assert _advisory_locks(ctx) == 0
