"""Claim a task -> fetch inputs -> engine -> store outputs -> record result.

Workers are threads inside ``serve`` (ncnn releases the GIL, so they run in
parallel). A heartbeat renews the lease while a file is processed; if the
renewal fails (the lease was lost to another worker) the engine is asked to
stop and nothing is recorded. Outputs go under a per-attempt key, so a
dead attempt's leftovers never mix with the one that completes.

An outage of the object store or the database is not the task's fault: the
task goes back to the queue, due again after a backoff, and only fails once
its attempts are spent. So is a full work disk: before each file the
worker compares the engine's estimate of the work space it needs
(``pipeline.work_space_bytes``) with the disk's free space: a file waits
while this process's other tasks hold the space it needs (``WorkSpace``), a
disk full of anything else, or a write that meets ENOSPC anyway, hands the
task back the same way (on the task's last attempt that file alone fails:
the others are still delivered), and a file the whole disk could never
hold fails at once. Work files
live in a folder per process (``work/<host>-<pid>-<random>``) held by a lock,
so a starting pool can remove what killed processes left behind without
touching a live one's.
"""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from boto3.exceptions import RetriesExceededError
from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy import select

from upscayl_cloud.config import Settings
from upscayl_cloud.db.engine import database_unavailable
from upscayl_cloud.db.tables import task_files, tasks
from upscayl_cloud.diskspace import (
    WORK_SPACE,
    WaitCancelledError,
    WorkDiskTooSmallError,
    out_of_space,
)
from upscayl_cloud.engine.options import EngineSettings, available_cores
from upscayl_cloud.queue.lease import Claim, claim, release, renew
from upscayl_cloud.queue.outage import ClaimOutage, RenewalOutage
from upscayl_cloud.services.context import Context
from upscayl_cloud.services.limits import image_limits
from upscayl_cloud.services.metrics import Metrics
from upscayl_cloud.services.results import (
    FileOutcome,
    discard_outputs,
    fail_task,
    finish_task,
    output_folders,
)
from upscayl_cloud.services.uploads import MAX_BASE_NAME_BYTES, fit_name, safe_base_name
from upscayl_cloud.storage.base import StorageUnavailableError
from upscayl_cloud.storage.s3client import unavailable as store_unavailable
from upscayl_cloud.workdirs import (
    hold_work_dir,
    let_go_work_dir,
    process_work_dir,
    sweep_work_dirs,
)

log = logging.getLogger(__name__)

RESULT_TYPES = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}
INTERNAL_FILE_ERROR = "An internal error occurred while processing this file"
INTERNAL_TASK_ERROR = "An internal error occurred while processing the task"


class LeaseLostError(Exception):
    """Another worker owns the task now; stop without writing anything."""


class ShutdownError(Exception):
    """The pool is stopping: hand the task back instead of finishing it."""


def unavailable(error: BaseException) -> bool:
    """Whether ``error`` (or what it wraps) says the object store or the
    database cannot be reached right now, rather than that this task is bad.

    The store's failures mostly arrive translated (``s3client.translate``:
    StorageUnavailableError for a refused, timed-out or 5xx store), but
    boto3's transfers raise their own around botocore's (S3UploadFailedError
    wraps the ClientError; RetriesExceededError a broken download), so the
    chain of causes is read, and botocore's errors are judged as
    ``s3client.unavailable`` judges them. Anything else, a missing object,
    AccessDenied, a missing bucket, is an answer, not an outage: retrying
    it would only spend the task's attempts and minutes on a certain
    failure."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StorageUnavailableError):
            return True
        if isinstance(current, ClientError | BotoCoreError):
            return store_unavailable(current)
        if isinstance(current, RetriesExceededError | ConnectionError | TimeoutError):
            return True
        if database_unavailable(current):
            return True
        current = current.__cause__ or current.__context__
    return False


#: The longest wait before a retry, however many attempts are allowed.
MAX_RETRY_DELAY_S = 3600.0


def retry_delay(settings: Settings, attempt: int) -> float:
    """How long a task waits before its next attempt after an outage: a
    lease's length, doubling with each attempt (60 s, 120 s... by default),
    long enough for a store to restart, short of spinning through the
    attempts while it is down."""
    return min(MAX_RETRY_DELAY_S, settings.lease_seconds * 2 ** max(0, attempt - 1))


def threads_per_worker(settings: Settings) -> int:
    """Inference threads each worker of this process gets: the configured
    number, or this machine's usable cores shared between the workers."""
    return settings.engine_threads or max(1, available_cores() // max(1, settings.workers))


def configured_engine(settings: Settings) -> EngineSettings:
    """The engine as ``UPSCAYL_*`` configures it (backend, precision, tiles,
    encoders, image limits, faces), for one caller using this machine's
    cores alone with its work files in the system's temporary folder: local
    ``upscale``, which would otherwise ignore what the service was told."""
    from upscayl_cloud.engine import faces
    from upscayl_cloud.engine.options import EncodeSettings

    threads = settings.engine_threads or available_cores()
    return EngineSettings(
        threads=threads,
        use_gpu=settings.engine_use_gpu,
        backend=settings.engine_backend,
        precision=settings.engine_precision,
        cache_dir=settings.resolved_engine_cache_dir,
        cache_max_mb=settings.engine_cache_max_mb,
        tile_size=settings.engine_tile_size or None,
        tile_memory_mb=settings.engine_tile_memory_mb,
        limits=image_limits(settings),
        encode=EncodeSettings(
            png_compression=settings.png_compression,
            jpeg_quality=settings.jpeg_quality,
            webp_quality=settings.webp_quality,
            webp_effort=settings.webp_effort,
            jpeg_optimize_coding=settings.jpeg_optimize_coding,
            jpeg_subsample=settings.jpeg_subsample,
        ),
        face_models_dir=faces.models_dir(settings.data_dir),
        face_model=settings.face_model or None,
        # The restorer obeys the same switches as the upscaling networks:
        # FaceSettings' own defaults (CUDA, every core) ignored both.
        faces=faces.FaceSettings(use_gpu=settings.engine_use_gpu, threads=threads),
    )


def engine_settings(settings: Settings) -> EngineSettings:
    """The engine's settings for this process's workers: threads shared
    between them, work files under the data directory (planes can be several
    times an output's size: not for a small /tmp), in this process's own
    folder (``process_work_dir``). The face restorer gets a worker's share
    of threads too: with every core each, workers restoring faces at once
    would contend for the same cores."""
    configured = configured_engine(settings)
    threads = threads_per_worker(settings)
    return replace(
        configured,
        threads=threads,
        concurrency=max(1, settings.workers),
        work_dir=process_work_dir(settings.data_dir),
        faces=replace(configured.faces, threads=threads),
    )


class Heartbeat:
    """Renews the lease with the latest progress until stopped, on its own thread.

    It renews only while the task shows signs of life (:meth:`touch`: a
    tile done, a check for cancellation) at least every
    ``task_stall_seconds``: an engine call wedged in native code (a hung GPU
    driver) checks nothing, and renewing for it kept its task processing,
    its credits reserved, for as long as the process lived. Left to expire,
    the lease lets another worker take the task over or, on its last
    attempt, the reaper fail and refund it. The task is then given up on
    (:meth:`given_up`): its work folder stops counting as space that frees
    by itself (``WorkSpace``), or files of this process waiting for it
    would wait, their own leases renewed, for as long as it stays stuck.
    A lease lost to another worker is watched the same way: a thread that
    does not stop then is as stuck as one that stalled first."""

    def __init__(
        self, ctx: Context, held: Claim, on_stall: Callable[[], object] | None = None
    ) -> None:
        self._ctx = ctx
        self._claim = held
        self._on_stall = on_stall
        self._stop = threading.Event()
        self.progress = 0
        self.lost = False
        self._given_up = False
        #: One warning per run of failed renewals (a database outage), not one a beat.
        self._outage = RenewalOutage(held.task_id)
        self._interval = min(1.0, ctx.settings.lease_seconds / 3)
        self._stall_seconds = ctx.settings.task_stall_seconds
        self._active_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True, name="heartbeat")

    def touch(self) -> None:
        """The task is alive: it did something, or asked whether to stop."""
        self._active_at = time.monotonic()

    def given_up(self) -> bool:
        """Whether the task was declared stalled: its thread may never return."""
        return self._given_up

    def _stalled(self) -> bool:
        idle = time.monotonic() - self._active_at
        if not self._stall_seconds or idle <= self._stall_seconds:
            return False
        log.error(
            "task %s: no sign of life for %.0f s (a wedged GPU driver or runtime?): its "
            "lease is left to expire for another worker or the reaper, and its work "
            "space is no longer waited for; this worker thread may stay stuck until the "
            "process is restarted",
            self._claim.task_id,
            idle,
        )
        return True

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        written = -1
        while not self._stop.wait(self._interval):
            if self._stalled():
                self.lost = True  # should it wake, it stops as a task taken over does
                self._given_up = True
                if self._on_stall is not None:
                    self._on_stall()
                return
            if self.lost:
                continue  # taken over: nothing to renew, only a stall to watch for
            progress = self.progress
            try:
                ok = renew(
                    self._ctx.db,
                    self._claim,
                    self._ctx.settings.lease_seconds,
                    progress if progress != written else None,
                )
            except Exception as exc:  # a busy database: try again next beat
                self._outage.failed(exc)
                continue
            self._outage.recovered()
            if not ok:
                self.lost = True
                continue
            written = progress


@dataclass(frozen=True)
class _Task:
    account_id: str
    model: str
    scale: int
    save_image_as: str


def processed_name(original: str, scale: int, model: str, ext: str) -> str:
    """Upscayl's own naming: ``<stem>_upscayl_<scale>x_<model>.<ext>``, from
    the caller's name made a plain one (clients save files under it). A long
    stem is cut, never the suffix: without it the result's name would be the
    source's, and a client saving beside its input would replace it."""
    stem = Path(safe_base_name(original)).stem or "image"
    suffix = f"_upscayl_{scale}x_{model}"
    return fit_name(stem, "", MAX_BASE_NAME_BYTES - len(f"{suffix}.{ext}")) + f"{suffix}.{ext}"


def process(
    ctx: Context,
    held: Claim,
    metrics: Metrics | None = None,
    stopping: threading.Event | None = None,
) -> bool:
    """Run one claimed task to its end; False when the lease was lost on the way."""
    stopping = stopping or threading.Event()
    from upscayl_cloud.engine.errors import CancelledError, EngineError
    from upscayl_cloud.engine.imageio import make_thumbnail, probe
    from upscayl_cloud.engine.options import UpscaleRequest
    from upscayl_cloud.engine.pipeline import upscale_file, work_space_bytes

    with ctx.db.begin() as conn:
        row = conn.execute(select(tasks).where(tasks.c.id == held.task_id)).one()
        files = conn.execute(
            select(task_files)
            .where(task_files.c.task_id == held.task_id)
            .order_by(task_files.c.position)
        ).all()
    task = _Task(row.account_id, row.model, row.scale, row.save_image_as)
    results_folder, thumbs_folder = output_folders(task.account_id, held)
    request = UpscaleRequest(
        model=task.model,
        scale=task.scale,
        output_format=task.save_image_as,
        enhance_face=bool(row.enhance_face),
    )
    settings = engine_settings(ctx.settings)
    outcomes: list[FileOutcome] = []
    on_stall = metrics.stalled_tasks.inc if metrics is not None else None
    with (
        Heartbeat(ctx, held, on_stall) as beat,
        # Waited for by other files only while this task shows signs of life.
        WORK_SPACE.folder(settings.work_dir, beat.given_up) as tmp,
    ):
        # A run of this attempt handed back on shutdown shares its number and
        # folders; what its discard could not remove (the store down then)
        # goes now, or files this run does not produce would stay unlinked.
        # Quietly, and with the lease renewed: a store that refuses deletes,
        # or is slow to, must not stop the work or cost an attempt (one that
        # hangs past UPSCAYL_TASK_STALL_SECONDS is given up on as any step is).
        _discard_quietly(ctx, task.account_id, held)
        beat.touch()

        def report(fraction: float, index: int) -> None:
            beat.touch()
            beat.progress = min(99, int(100 * (index + fraction) / len(files)))

        def should_cancel() -> bool:
            beat.touch()  # the engine between tiles; a file waiting for work space
            return beat.lost or stopping.is_set()

        for index, item in enumerate(files):
            beat.touch()
            # The previous file's source, result and thumbnail are stored or
            # given up by now: their space goes to this file.
            for leftover in tmp.iterdir():
                if leftover.is_file():
                    leftover.unlink()
            source = tmp / f"{index}-source"
            result = tmp / f"{index}.{task.save_image_as}"
            thumb = tmp / f"{index}-thumb.webp"
            upscaled_in = 0.0
            try:
                ctx.storage.download_to(item.source_key, source)
                # The header alone says how much work space the file needs.
                header = probe(source, settings.limits, item.file_type)
                estimate = work_space_bytes(
                    header.width,
                    header.height,
                    request,
                    has_alpha=header.has_alpha,
                    sixteen_bit=header.sixteen_bit,
                    source_bytes=source.stat().st_size,
                )
                # Waits while this process's other tasks hold the space.
                with WORK_SPACE.hold(tmp, estimate, task.scale, should_cancel):
                    started = time.monotonic()
                    done = upscale_file(
                        source,
                        result,
                        request,
                        # Planes inside the held folder, so that what they
                        # have written counts against what this file holds.
                        settings=replace(settings, work_dir=tmp),
                        progress=lambda f, i=index: report(f, i),
                        declared_type=item.file_type,
                        should_cancel=should_cancel,
                    )
                    upscaled_in = time.monotonic() - started
                    make_thumbnail(result, thumb, ctx.settings.thumbnail_long_edge)
            except (CancelledError, WaitCancelledError) as exc:
                if stopping.is_set():
                    raise ShutdownError(held.task_id) from exc
                raise LeaseLostError(held.task_id) from exc
            except EngineError as exc:
                if not exc.client_error:  # the operator's to fix: say what, not just a code
                    log.error("task %s file %d: %s: %s", held.task_id, index, exc.code, exc)
                message = exc.public_message if exc.client_error else INTERNAL_FILE_ERROR
                outcomes.append(FileOutcome(item.id, ok=False, error=message))
                _count_file(metrics, task.model, "failed")
                continue
            except WorkDiskTooSmallError as exc:
                log.warning("task %s file %d: %s", held.task_id, index, exc)
                outcomes.append(FileOutcome(item.id, ok=False, error=str(exc)))
                _count_file(metrics, task.model, "failed")
                continue
            except Exception as exc:
                if beat.lost:
                    raise LeaseLostError(held.task_id) from None
                if unavailable(exc):
                    raise  # the whole task waits for the store: nothing could be stored now
                if out_of_space(exc):
                    if held.attempt < ctx.settings.max_attempts:
                        raise  # the whole task waits for disk space: not this file's fault
                    # Handed back now, the task would fail whole: the files
                    # done already refunded and deleted, those after this one
                    # never tried, though a batch is partial-success.
                    log.warning("task %s file %d: %s", held.task_id, index, exc)
                    message = _disk_full_on_last_attempt(held, ctx.settings.max_attempts)
                    outcomes.append(FileOutcome(item.id, ok=False, error=message))
                    _count_file(metrics, task.model, "failed")
                    continue
                log.exception("task %s file %d failed", held.task_id, index)
                outcomes.append(FileOutcome(item.id, ok=False, error=INTERNAL_FILE_ERROR))
                _count_file(metrics, task.model, "failed")
                continue
            if metrics is not None:
                metrics.processing_seconds.labels(task.model).observe(upscaled_in)
            ext = task.save_image_as
            result_key = f"{results_folder}/{index}.{ext}"
            thumb_key = f"{thumbs_folder}/{index}.webp"
            size = ctx.storage.put_file(result_key, result)
            ctx.storage.put_file(thumb_key, thumb)
            outcomes.append(
                FileOutcome(
                    item.id,
                    ok=True,
                    result_key=result_key,
                    thumbnail_key=thumb_key,
                    processed_file_name=processed_name(
                        item.original_file_name, task.scale, task.model, ext
                    ),
                    result_type=RESULT_TYPES[ext],
                    final_file_size=size,
                    width=done.width,
                    height=done.height,
                )
            )
            _count_file(metrics, task.model, "completed")
            report(0.0, index + 1)
        if beat.lost:
            raise LeaseLostError(held.task_id)
    names = {item.id: repr(item.original_file_name) for item in files}
    return finish_task(ctx, held, outcomes, names)


def _last_attempt(held: Claim, attempts: int) -> str:
    """Which attempt the task failed on, and no more: the reasons of its
    earlier attempts (handed back, lost, interrupted) are not kept."""
    return f"the task's last attempt ({held.attempt} of {attempts})"


def _disk_full_on_last_attempt(held: Claim, attempts: int) -> str:
    return (
        f"The work disk was full on {_last_attempt(held, attempts)}: this file was not "
        "upscaled (refunded); try it again later"
    )


def _count_file(metrics: Metrics | None, model: str, outcome: str) -> None:
    """Counted when the file's outcome is known, before the task's is
    recorded: a lease lost afterwards means the file is done again, and
    counted again, by the successor (work done twice is work done)."""
    if metrics is not None:
        metrics.files.labels(model, outcome).inc()


def _discard_attempt(ctx: Context, account_id: str, held: Claim) -> None:
    discard_outputs(ctx, account_id, held.task_id, range(held.attempt, held.attempt + 1))


def _discard_quietly(ctx: Context, account_id: str, held: Claim) -> None:
    """Discard an attempt's outputs while the store may be down. What stays
    after a handed-back attempt is removed when its number is claimed again
    (``process``), or with the earlier attempts when a later one completes;
    after the task's last outcome it stays in the store (logged;
    deployment.md's lifecycle rule removes it)."""
    try:
        _discard_attempt(ctx, account_id, held)
    except Exception as exc:
        log.warning(
            "task %s attempt %d: outputs not removed yet: %s", held.task_id, held.attempt, exc
        )


def _retry_later(ctx: Context, account_id: str, held: Claim, error: BaseException) -> bool:
    """Hand the task back after an outage or a full disk, due after a
    backoff; fail it (and refund it) once this was its last allowed attempt,
    saying which of the two it was. True when failed."""
    reason = f"{type(error).__name__}: {error}".splitlines()[0][:300]
    attempts = ctx.settings.max_attempts
    if held.attempt >= attempts:
        log.warning(
            "task %s attempt %d/%d: %s; giving up", held.task_id, held.attempt, attempts, reason
        )
        # A full work disk met by a file on the last attempt fails that file
        # alone (``process``): a full disk here was met storing a result.
        if out_of_space(error):
            what = "A disk was full"
        else:
            what = "The object store or database was unavailable"
        message = f"{what} on {_last_attempt(held, attempts)}; giving up (credits refunded)"
        recorded = fail_task(ctx, held, message)
        still_held = recorded
    else:
        delay = retry_delay(ctx.settings, held.attempt)
        log.warning(
            "task %s attempt %d/%d: %s; back to the queue, due in %.0f s",
            held.task_id, held.attempt, attempts, reason, delay,
        )  # fmt: skip
        still_held = release(ctx.db, held, delay)
        recorded = False
    # Not held any more: either a successor claimed it (its prefix is its
    # own), or this attempt's outcome did commit and only the answer was
    # lost in the outage. Then its outputs are the delivered result.
    last = held.attempt
    if not still_held and _completed_by(ctx, held):
        last -= 1
    for attempt in range(1, last + 1):
        _discard_quietly(ctx, account_id, Claim(held.task_id, attempt))
    return recorded


def _completed_by(ctx: Context, held: Claim) -> bool:
    """Whether ``held`` is the attempt that completed its task; True when
    the database cannot say, as keeping an orphan beats deleting a result."""
    try:
        with ctx.db.begin() as conn:
            row = conn.execute(
                select(tasks.c.status, tasks.c.attempts).where(tasks.c.id == held.task_id)
            ).one()
    except Exception as exc:
        log.warning("task %s: outcome unknown, its outputs are kept: %s", held.task_id, exc)
        return True
    completed = row.status == "completed" and row.attempts == held.attempt
    if completed:
        log.info("task %s attempt %d had completed after all", held.task_id, held.attempt)
    return completed


def handle(
    ctx: Context,
    held: Claim,
    metrics: Metrics | None = None,
    stopping: threading.Event | None = None,
) -> None:
    """Process a claim, cleaning up after lost leases and unexpected failures.
    An outage of the store or database, or a full disk, hands the task back
    (``_retry_later``) instead of failing it: a brief outage or other work
    filling the disk must not cost a task its result."""
    with ctx.db.begin() as conn:
        account_id = conn.execute(
            select(tasks.c.account_id).where(tasks.c.id == held.task_id)
        ).scalar_one()
    try:
        recorded = process(ctx, held, metrics, stopping)
    except ShutdownError:
        # Outputs first: the attempt is given back, so the next claim reuses
        # its number and its storage prefix.
        _discard_quietly(ctx, account_id, held)
        release(ctx.db, held, give_back_attempt=True)
        log.info("task %s handed back to the queue on shutdown", held.task_id)
        return
    except LeaseLostError:
        recorded = False
        log.warning("task %s attempt %d lost its lease", held.task_id, held.attempt)
    except Exception as exc:
        if unavailable(exc) or out_of_space(exc):
            _retry_later(ctx, account_id, held, exc)
            return
        log.exception("task %s attempt %d crashed", held.task_id, held.attempt)
        if fail_task(ctx, held, INTERNAL_TASK_ERROR):
            # Failed as a whole: what this attempt stored before it crashed
            # is delivered to nobody.
            for attempt in range(1, held.attempt + 1):
                _discard_quietly(ctx, account_id, Claim(held.task_id, attempt))
            return
        recorded = False
    if not recorded:
        _discard_quietly(ctx, account_id, held)
        return
    # The outcome is committed: a store that fails now leaves files behind
    # (logged), and must not read as "could not record its outcome".
    for earlier in range(1, held.attempt):
        _discard_quietly(ctx, account_id, Claim(held.task_id, earlier))


def idle_wait(interval: float) -> float:
    """How long an idle worker sleeps before its next claim: ``interval`` on
    average, jittered by +-50%. Workers started together would otherwise poll
    in lockstep, so N idle workers would pick a task up no sooner than one
    (bench/lease_queue.py measured 247 ms mean with 8 lockstep workers at 0.5 s)."""
    return interval * random.uniform(0.5, 1.5)


#: How often an idle pool looks for work folders of processes that died
#: since it started (a crashed worker that is not restarted sweeps nothing).
WORK_SWEEP_INTERVAL_S = 3600.0


class WorkerPool:
    """``count`` worker threads that claim and process tasks until stopped."""

    def __init__(self, ctx: Context, count: int, metrics: Metrics | None = None) -> None:
        self._ctx = ctx
        self._metrics = metrics
        self._stop = threading.Event()
        self._swept_at = -math.inf
        self._sweeping = threading.Lock()
        base = f"{socket.gethostname()}:{os.getpid()}"
        self._threads = [
            threading.Thread(target=self._run, args=(f"{base}:{n}",), daemon=True, name=f"w{n}")
            for n in range(count)
        ]
        #: The claim each worker thread holds now, by thread name.
        self._holding: dict[str, Claim] = {}
        self._holding_lock = threading.Lock()
        #: Whether this pool counts among the work folder's users (start to stop).
        self._holds_work_dir = False
        #: Shared by the threads: one log line per database outage, not per poll.
        self._outage = ClaimOutage()

    def start(self) -> None:
        """Start the workers, first removing work folders of dead processes."""
        self._sweep_work_dirs()
        hold_work_dir(self._ctx.settings.data_dir)
        self._holds_work_dir = True
        for thread in self._threads:
            thread.start()

    def _sweep_work_dirs(self) -> None:
        """Remove dead processes' work folders: at start, then at most every
        :data:`WORK_SWEEP_INTERVAL_S` from an idle worker thread (one at a time)."""
        if not self._sweeping.acquire(blocking=False):
            return
        try:
            self._swept_at = time.monotonic()
            sweep_work_dirs(self._ctx.settings.data_dir)
        except OSError as exc:  # cleaning is not worth refusing to work
            log.warning("could not clean old work folders: %s", exc)
        finally:
            self._sweeping.release()

    def stop(self, timeout: float = 30) -> None:
        """Stop claiming, and wait at most ``timeout`` seconds in all for the
        tasks in progress to be handed back at their next tile (or to
        finish). A task whose tile runs longer is handed back from here at
        once, its attempt counted: the thread may still write under that
        attempt's storage prefix, which the next claim would reuse if the
        attempt were given back; every later write of that thread is
        fenced off by the lease guard. Without this the task waited for its
        lease to expire after the process exited, as one on its last attempt
        still does."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        alive = {thread.name for thread in self._threads if thread.is_alive()}
        with self._holding_lock:
            stuck = [held for name, held in self._holding.items() if name in alive]
        # On its last attempt a task handed back would be pending with none
        # left, claimed by nobody and reaped by nobody: it is left to its
        # lease, and the reaper fails it (refunded) once that expires.
        last = self._ctx.settings.max_attempts
        for held in (held for held in stuck if held.attempt < last):
            try:
                if release(self._ctx.db, held):
                    log.warning(
                        "task %s attempt %d: still running after %.0f s; handed back, "
                        "attempt counted",
                        held.task_id, held.attempt, timeout,
                    )  # fmt: skip
            except Exception as exc:  # the lease will expire instead
                log.warning("task %s: could not hand it back: %s", held.task_id, exc)
        # A thread still running may still write there: then the folder is
        # left to the next start's sweep.
        if self._holds_work_dir and not alive:
            self._holds_work_dir = False
            try:
                let_go_work_dir(self._ctx.settings.data_dir)
            except OSError as exc:
                log.warning("could not remove this process's work folder: %s", exc)

    def alive(self) -> bool:
        return all(thread.is_alive() for thread in self._threads)

    def _run(self, owner: str) -> None:
        settings = self._ctx.settings
        while not self._stop.is_set():
            try:
                held = claim(self._ctx.db, owner, settings.lease_seconds, settings.max_attempts)
                self._outage.recovered()
            except Exception as exc:
                held = None
                if unavailable(exc):
                    wait = self._outage.failed(exc, settings.poll_interval_seconds)
                    self._stop.wait(idle_wait(wait))
                    continue
                log.exception("claim failed")
            if held is None:
                if time.monotonic() - self._swept_at >= WORK_SWEEP_INTERVAL_S:
                    self._sweep_work_dirs()
                self._stop.wait(idle_wait(settings.poll_interval_seconds))
                continue
            name = threading.current_thread().name
            with self._holding_lock:
                self._holding[name] = held
            try:
                handle(self._ctx, held, self._metrics, self._stop)
            except Exception as exc:  # e.g. the database went away: the lease will expire
                if unavailable(exc):
                    log.warning("task %s: could not record its outcome: %s", held.task_id, exc)
                else:
                    log.exception("task %s: could not record its outcome", held.task_id)
                self._stop.wait(settings.poll_interval_seconds)
            finally:
                with self._holding_lock:
                    del self._holding[name]
