"""Retention: expired originals and results are deleted; queued inputs are
kept, including by a start-task still in flight when its original expires;
an original marked deleted is purged by a later pass whatever stopped the
pass that marked it."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import event, func, select, update

from support.images import png_bytes
from support.postgres import until_a_lock_is_awaited
from support.tasks import queued_task, uploaded
from tests.storage.unreachable import closed_endpoint
from upscayl_cloud.db.engine import now_ms
from upscayl_cloud.db.tables import task_files, tasks, uploads
from upscayl_cloud.services import keys, sweeper
from upscayl_cloud.services import uploads as uploads_service
from upscayl_cloud.services.context import Context
from upscayl_cloud.services.errors import BadRequestError
from upscayl_cloud.services.keys import Principal
from upscayl_cloud.services.sweeper import sweep
from upscayl_cloud.services.tasks import TaskOptions, start_task
from upscayl_cloud.services.uploads import storage_key
from upscayl_cloud.storage.base import CompletedPart, MultipartError, StorageError
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
    """The real store, except that it refuses to delete one key. A stand-in
    (a mock, named so): as root, no file permission makes a real unlink fail,
    and a store's per-object AccessDenied cannot be set up on loopback."""

    def __init__(self, ctx: Context, key: str) -> None:
        self._ctx, self._key = ctx, key

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx.storage, name)

    def delete(self, key: str) -> None:
        if key == self._key:
            raise StorageError(f"{key}: AccessDenied")
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
