"""``upscale(paths, ...)``: local images in, upscaled files out, in one call.

The steps users would otherwise write themselves, with their failure modes:
collect images (skipping what is not one, with a reason), upload them (parts
in parallel, resumable), start one task per ``batch_size`` files (fewer when
the server's ``maxFilesPerTask`` is lower; each started as soon as it is
uploaded), poll with backoff, download each result next to its source or into
``out_dir``. One bad file never sinks the others: a batch the server refuses
because of one file is sent again without it when the refusal names that
file (see ``_culprit``), so only the culprit fails, and everything that
failed is reported with its reason. A refusal that every
later request would meet too (a bad key, no credits left) stops the run.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from upscayl_cloud.client._core import MODELS
from upscayl_cloud.client.errors import (
    ApiError,
    CompletionLimitedError,
    ConnectionFailedError,
    RateLimitedError,
    UnwritableOutputError,
    UploadCancelledError,
    UpscaleInterrupted,
    UpscaylError,
    describe,
    is_outage,
)
from upscayl_cloud.client.files import Duplicate, EarlierResult, Skipped, Source, collect
from upscayl_cloud.client.matching import delivered_entry, named_once
from upscayl_cloud.client.naming import (
    OutputNames,
    local_name,
    output_folder_problem,
    result_file_name,
    unwritable_folder_problem,
)
from upscayl_cloud.client.polling import (
    SPEC_HISTORY_LIMIT_PER_HOUR,
    SPEC_STATUS_LIMIT_PER_HOUR,
    PollBudget,
    published_limit,
)
from upscayl_cloud.client.report import (
    FileResult,
    Quiet,
    Reporter,
    UpscaleReport,
    finish,
    notice,
)
from upscayl_cloud.client.sync import Client
from upscayl_cloud.client.transfer import expected_size
from upscayl_cloud.client.uploads import MULTIPART_THRESHOLD_BYTES, upload_file
from upscayl_cloud.client.watched import Watched
from upscayl_cloud.client.watching import watch

#: Codes of a whole-batch refusal that may be one file's fault.
_SPLIT_CODES = frozenset({"BAD_REQUEST", "INVALID_FILE_TYPE", "FILE_SIZE_EXCEEDED"})

#: What one file's upload or download may raise that is that file's alone:
#: ours, the disk's, and what a file's name or a malformed answer about it
#: raises (``ValueError``, ``UnicodeError`` among them: a name that does not
#: encode, a part size that is no number; ``LookupError`` and ``TypeError``:
#: an answer without a field, or with one of another type). Each fails its
#: file, not the run: a name that did not encode ended a whole run, the
#: tasks already started (and charged) neither downloaded nor named. Not a
#: bare ``Exception``: a bug of ours should still show as one.
_FILE_FAILURES: tuple[type[Exception], ...] = (
    UpscaylError,
    OSError,
    ValueError,
    LookupError,
    TypeError,
)


def upscale(
    paths: Iterable[Path | str] | Path | str,
    *,
    model: str | None = None,
    scale: str | int | None = None,
    fmt: str | None = None,
    face: bool = False,
    out_dir: Path | str | None = None,
    recursive: bool = False,
    thumbnails: bool = False,
    client: Client | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    batch_size: int = 50,
    upload_workers: int = 4,
    multipart_threshold: int = MULTIPART_THRESHOLD_BYTES,
    reporter: Reporter | None = None,
    timeout: float | None = None,
) -> UpscaleReport:
    """Upscale images and folders; returns one :class:`FileResult` per input file.

    ``paths`` is a list of files and folders, or one of them alone (a str
    is a path, never iterated: ``"./x.png"`` used to send every image of
    ``.`` and ``/``).

    Options left as None take the server's defaults (``upscayl-standard-4x``,
    ``4``, ``jpg``). Results are written next to each source, or below
    ``out_dir`` keeping each file's place inside the folder it was found in.
    The server only suggests the file name (``processedFileName``): it is cut
    down to a plain name, so it can never pick the folder (see
    :mod:`upscayl_cloud.client.naming`), and a name this run already used, or
    one of its inputs, gets `` (2)``, `` (3)``, ... before its extension.
    An earlier result of the same source (recorded in the folder's
    ``.upscayl-results.json``) is replaced; any other file, or a folder, at
    the name is not (the next free `` (n)`` name is used).
    ``FileResult.output`` is the path actually written. An ``out_dir``
    that is a file (or lies below one) raises ``NotADirectoryError``, and a
    folder results would go to that takes no file (read-only, no
    permission) :class:`UnwritableOutputError`, before anything is sent.
    ``timeout``: seconds to wait for the tasks once all are started (None:
    as long as they run); the files of tasks still running then fail with
    the ``client status`` that finds their results. A task that shows no
    progress for ``client.poll.stall_seconds`` is told in
    ``report.notices`` (and to ``reporter.notice``). Ctrl-C raises
    :class:`UpscaleInterrupted`, which names the tasks already started.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    target = Path(out_dir) if out_dir is not None else None
    problem = output_folder_problem(target) if target is not None else None
    if problem is not None:
        raise NotADirectoryError(problem)
    own = client is None
    api = client or Client(base_url, api_key)
    report, hooks = UpscaleReport(), reporter or Quiet()
    named = [Path(p) for p in paths]
    tasks: list[Watched] = []
    starting: list[Path] = []  # the files of a start-task on the wire
    try:
        # Inside the try: Ctrl-C while a large folder is walked closes our client too.
        found = collect(named, recursive)
        sources = [item for item in found if isinstance(item, Source)]
        _check_destinations(sources, target)
        for item in found:
            if isinstance(item, Skipped):
                # A file named explicitly failed; one met in a folder is merely skipped.
                failed = item.path in named and not isinstance(item, Duplicate)
                status = "failed" if failed else "skipped"
                finish(report, hooks, FileResult(item.path, status, item.reason))
        options = {
            "model": model,
            "scale": scale,
            "save_image_as": fmt,
            "enhance_face": True if face else None,
        }
        try:
            size = _follow_server_limits(api, batch_size, face) if sources else 1
            # After the server's answer: a run it stops (no face enhancement)
            # sends nothing, and drew an upload bar stuck at 0 %.
            hooks.uploading(sum(s.size for s in sources))
            multipart = _MultipartStop(multipart_threshold)
            # Each batch starts as soon as it is uploaded: the server works while we upload.
            for start in range(0, len(sources), size):
                chunk = sources[start : start + size]
                uploaded = _upload_all(api, chunk, upload_workers, multipart, hooks, report)
                if uploaded:
                    _start(api, uploaded, options, hooks, report, tasks, starting)
        except _RunStoppedError as stop:
            reported = {r.source for r in report.results}
            reported |= {source.path for task in tasks for source in task.sources.values()}
            for source in sources:
                if source.path not in reported:
                    how = "uploaded, not started" if source.path in stop.uploaded else "not sent"
                    reason = f"{how}, the run stopped: {describe(stop.cause)}"
                    finish(report, hooks, FileResult(source.path, "failed", reason))
        watch(
            api,
            tasks,
            hooks.processing,
            thumbnails,
            timeout=timeout,
            on_notice=lambda message: notice(report, hooks, message),
        )
        names = OutputNames(item.path for item in found if not isinstance(item, EarlierResult))
        outage = _DownloadOutage(api)
        for task in tasks:
            try:
                _collect(api, task, target, thumbnails, options, names, outage, hooks, report)
            finally:
                names.save()  # Ctrl-C too: what was downloaded is known as ours
    except KeyboardInterrupt as exc:
        if isinstance(exc, UpscaleInterrupted):
            raise
        ids = [task.task_id for task in tasks]
        raise UpscaleInterrupted(ids, report, maybe_started=starting) from exc
    finally:
        if own:
            api.close()
    return report


def _check_destinations(sources: list[Source], target: Path | None) -> None:
    """Every folder a result will go to takes a file, or raise before anything
    is sent (see :func:`unwritable_folder_problem`)."""
    folders = {(target / s.relative.parent) if target else s.path.parent for s in sources}
    for folder in sorted(folders):
        problem = output_folder_problem(folder)
        if problem is not None:
            raise NotADirectoryError(problem)
        problem = unwritable_folder_problem(folder)
        if problem is not None:
            raise UnwritableOutputError(problem)


def _follow_server_limits(api: Client, wanted: int, face: bool) -> int:
    """``wanted``, but no more than the server takes in one task: a batch over its
    ``limits.maxFilesPerTask`` (published in its capabilities, when it has
    them) is refused whole, which failed every file of a 12-file folder on a
    server taking 5. The spec sets no number, so without one ``wanted`` stands.
    The same answer may raise the poll budgets (:func:`_follow_published_limits`),
    and stops a run asking for face enhancement that the server says it has
    not: every file used to be uploaded first, then refused."""
    try:
        info = api.capabilities() or {}
    except UpscaylError as exc:
        # Only a bad key: its own limit used up says nothing of the upload
        # and start limits, and an outage is met (and told) by the uploads.
        if isinstance(exc, ApiError) and exc.status_code == 401:
            raise _RunStoppedError(exc) from exc
        info = {}
    if face and info.get("faceEnhancement") is False:
        why = info.get("faceEnhancementMessage") or "this server has no face enhancement"
        raise _RunStoppedError(UpscaylError("FACE_ENHANCEMENT_UNAVAILABLE", str(why)))
    _follow_published_limits(api, info)
    limits = info.get("limits")
    most = limits.get("maxFilesPerTask") if isinstance(limits, dict) else None
    if isinstance(most, int) and not isinstance(most, bool) and most >= 1:
        wanted = min(wanted, most)
    return max(1, wanted)


def _follow_published_limits(api: Client, info: Mapping[str, Any]) -> None:
    """Before any poll: a server whose operator raised get-task-status's or
    get-upscayl-history's limit is polled that much faster (once per client:
    a later run keeps what earlier ones spent). A lower one is met as before:
    its 429 is waited out if short, else reported (a budget paced to a few
    polls an hour would sit silent between them). A schedule that names its
    own status limit keeps it."""
    status = published_limit(info, "get-task-status") or 0
    if (
        status > SPEC_STATUS_LIMIT_PER_HOUR
        and api.poll.hourly_limit is None
        and api.poll_budget.hourly_limit != status
    ):
        raised = PollBudget(replace(api.poll, hourly_limit=status))
        api.poll_budget = raised.continue_from(api.poll_budget)
    history = published_limit(info, "get-upscayl-history") or 0
    if history > SPEC_HISTORY_LIMIT_PER_HOUR and api.history_budget.hourly_limit != history:
        raised = PollBudget(api.poll.for_history(history))
        api.history_budget = raised.continue_from(api.history_budget)


class _RunStoppedError(Exception):
    """A refusal that every later request would meet too: a 401 (the key),
    start-task's 402 (no credits left) or its 429 not worth waiting for, or
    a server (or its store) that could not be reached, or answered that it
    is unavailable, after every retry.
    Uploading and starting the remaining files would only repeat it, one
    request (or batch) at a time."""

    def __init__(self, cause: UpscaylError) -> None:
        super().__init__(str(cause))
        self.cause = cause
        #: Files uploaded before the run stopped, which no task was started for.
        self.uploaded: set[Path] = set()


def _stops_the_run(exc: Exception, starting: bool = False) -> bool:
    """start-task's 429 reaches here once it was not worth waiting for (an
    hourly limit used up): every later batch would meet it too, after
    uploading up to 100 MB a file for nothing. get-upload-url's may be the
    cap on uploads waiting for a task, which starting them frees: not a
    stop. A connection failure comes after every retry: an unreachable
    server cost each of 1000 files its five tries, a quarter of an hour.
    So does a 5xx of the uploads' calls, all retried (a server whose store or
    database is away, or whose disk is full, answers 503 with Retry-After:
    each file spent its tries on it, 83 minutes for 1000 files); of
    start-task's, only a 503 is retried, so only it stops the run (a 500
    may be one batch's, and is not sent again)."""
    if isinstance(exc, ConnectionFailedError) or (starting and isinstance(exc, RateLimitedError)):
        return True
    if not isinstance(exc, ApiError):
        return False
    if exc.status_code == 401 or (starting and exc.status_code == 402):
        return True
    # 503: retried for every call, start-task's too. 500/502/504: only for the others.
    return exc.status_code == 503 or (not starting and exc.status_code in (500, 502, 504))


class _MultipartStop:
    """Set once complete-multipart-upload refused a file for longer than is
    worth waiting (:class:`CompletionLimitedError`, its hourly limit spent):
    from then on each file is sent in one PUT, multipart refused. Before,
    each further large file uploaded every part only to be refused the same
    way; and a file under our threshold is multipart too when the server's
    own threshold is lower."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.cause: UpscaylError | None = None


def _upload_all(
    api: Client,
    sources: list[Source],
    workers: int,
    multipart: _MultipartStop,
    hooks: Reporter,
    report: UpscaleReport,
) -> list[tuple[Source, dict[str, Any]]]:
    """Upload every source (a few at a time); failures are reported, not raised.

    An interruption (Ctrl-C lands in this thread, while it waits) cancels the
    uploads not yet started and tells the running ones to start no new part
    (nor to retry a request), then waits only for the requests already on
    the wire: leaving the pool plainly would run every queued upload to
    completion, and delete the state files that let the next run resume."""
    cancel = threading.Event()

    def one(source: Source) -> dict[str, Any] | Exception:
        try:
            return upload_file(
                api,
                source.path,
                file_type=source.mime_type,
                multipart_threshold=multipart.threshold,
                on_bytes=hooks.uploaded,
                cancel=cancel,
                single=multipart.cause is not None,
            )
        except _FILE_FAILURES as exc:
            if _stops_the_run(exc):
                cancel.set()  # at once, before this worker takes the next file
            if isinstance(exc, CompletionLimitedError):
                multipart.cause = exc
            return exc

    uploaded = []
    told: set[Path] = set()

    def tell(source: Source, outcome: dict[str, Any] | Exception) -> None:
        """Report a failed upload with its own reason, or keep an uploaded one."""
        told.add(source.path)
        if isinstance(outcome, Exception):
            finish(report, hooks, FileResult(source.path, "failed", _upload_reason(outcome)))
        else:
            uploaded.append((source, outcome))

    futures: list[Future[Any]] = []
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            try:
                # Inside the try: a Ctrl-C while submitting cancels what is queued.
                futures.extend(pool.submit(one, source) for source in sources)
                cut_short: list[tuple[Source, Exception]] = []
                for source, future in zip(sources, futures, strict=True):
                    outcome = future.result()
                    if isinstance(outcome, UpscaylError) and _stops_the_run(outcome):
                        raise _RunStoppedError(outcome)  # those cut short: "not sent"
                    if isinstance(outcome, UploadCancelledError):
                        cut_short.append((source, outcome))  # told once the cause is known
                    else:
                        tell(source, outcome)
                for source, outcome in cut_short:  # cancelled, with no stop of the run
                    tell(source, outcome)
            except BaseException:
                cancel.set()
                for pending in futures:
                    pending.cancel()
                raise
    except _RunStoppedError as stop:
        # The pool has let the requests on the wire finish: these files are on
        # the server, waiting for a start-task that will not come.
        stop.uploaded = {s.path for s, f in zip(sources, futures, strict=False) if _sent(f)}
        # A file that failed for a reason of its own keeps it: it would not
        # have been sent whether or not the run stopped.
        for source, future in zip(sources, futures, strict=False):
            outcome = _failure(future)
            if source.path not in told and outcome is not None:
                tell(source, outcome)
        raise
    return uploaded


def _failure(future: Future[Any]) -> Exception | None:
    """The failure of a finished upload that is its file's own (neither the
    run's stop nor a cancellation it caused), else None."""
    if not future.done() or future.cancelled():
        return None
    outcome = future.result()
    if not isinstance(outcome, Exception) or isinstance(outcome, UploadCancelledError):
        return None
    if isinstance(outcome, UpscaylError) and _stops_the_run(outcome):
        return None
    return outcome


def _upload_reason(exc: Exception) -> str:
    reason = f"upload failed: {describe(exc)}"
    if isinstance(exc, CompletionLimitedError):
        reason += "; its parts are kept: the same command completes it once the limit allows"
    return reason


def _sent(future: Future[Any]) -> bool:
    """Whether an upload of ``_upload_all`` went through (``one`` returns its
    failures rather than raising them)."""
    return future.done() and not future.cancelled() and isinstance(future.result(), dict)


def _start(
    api: Client,
    batch: list[tuple[Source, dict[str, Any]]],
    options: dict[str, Any],
    hooks: Reporter,
    report: UpscaleReport,
    started: list[Watched],
    starting: list[Path],
) -> None:
    """One task for the batch, added to ``started`` (and told to the hooks)
    as soon as the server has it: a Ctrl-C before the run's end then still
    names it. While start-task is on the wire, ``starting`` holds the
    batch's files: Ctrl-C then cannot know whether the server created (and
    charged) the task, and says so instead of "no task was started". A
    refusal that names a file (``File '<fileName>'`` or ``files[i]``) fails
    that file and the rest is sent again, so k bad files cost k+1 requests,
    not one per file (start-task is limited to 50 an hour)."""
    pending = list(batch)
    while pending:
        starting[:] = [source.path for source, _ in pending]
        try:
            task_id = api.start_task([entry for _, entry in pending], **options)
        except UpscaylError as exc:
            starting.clear()  # answered, or StartUncertainError, which says so itself
            culprit = _culprit(exc, pending)
            if culprit is None or len(pending) == 1:
                for source, _entry in pending:
                    finish(report, hooks, FileResult(source.path, "failed", describe(exc)))
                if _stops_the_run(exc, starting=True):
                    raise _RunStoppedError(exc) from exc
                return
            source, _entry = pending.pop(culprit)
            finish(report, hooks, FileResult(source.path, "failed", describe(exc)))
            continue
        started.append(Watched(task_id, {entry["fileName"]: source for source, entry in pending}))
        starting.clear()
        hooks.processing(task_id, len(pending), 0.0)
        return


def _culprit(exc: UpscaylError, pending: list[tuple[Source, dict[str, Any]]]) -> int | None:
    """The index of the file a 400 blames, if it names one of ours: by its
    ``fileName`` (quoted as ``repr`` does, or in any quotes or none, as a
    whole name: see :func:`named_once`), its place (``files[i]``), or the
    name it was uploaded under (servers may quote the caller's own name), the
    last only when no other pending file has that name, so an innocent file
    is never dropped. A refusal that names no file (or more than one) fails
    the whole batch: isolating the culprit depends on the server naming it."""
    if not isinstance(exc, ApiError) or exc.code not in _SPLIT_CODES:
        return None
    for index, (_source, entry) in enumerate(pending):
        if repr(entry["fileName"]) in exc.message or f"files[{index}]" in exc.message:
            return index
    bare = named_once(exc.message, [str(entry["fileName"]) for _, entry in pending])
    if bare is not None:
        return bare
    blamed = [i for i, (source, _) in enumerate(pending) if repr(source.path.name) in exc.message]
    return blamed[0] if len(blamed) == 1 else None


class _DownloadOutage:
    """How long the run's downloads have met a server (or store) that cannot
    be reached, shared by all of them: a download is tried again through an
    outage of up to ``PollSchedule.outage_seconds``, as a poll is. With only
    the client's retries (a few seconds), a short outage after the tasks had
    finished (and been charged) failed every result. Once an outage has lasted
    that long, each remaining download is tried once more, not waited for."""

    def __init__(self, api: Client) -> None:
        self._api = api
        self._since: float | None = None
        self._delays = api.poll.delays()

    def wait(self) -> bool:
        """After a download failed for want of a server: wait a little and
        return True (try again), or False once the outage has lasted too long."""
        now = time.monotonic()
        if self._since is None:
            self._since, self._delays = now, self._api.poll.delays()
        left = self._since + self._api.poll.outage_seconds - now
        if left <= 0:
            return False
        time.sleep(min(next(self._delays), left))
        return True

    def over(self) -> None:
        """A download went through: the server is back."""
        self._since = None


def _collect(
    api: Client,
    task: Watched,
    out_dir: Path | None,
    thumbnails: bool,
    options: Mapping[str, Any],
    names: OutputNames,
    outage: _DownloadOutage,
    hooks: Reporter,
    report: UpscaleReport,
) -> None:
    """Download the delivered files; the rest failed with the task's own error.

    Each destination is claimed from ``names``: a plain name inside our folder
    (the server's name sanitized, else one built from the local file), unique
    within the run, and noted there once written. A download that fails says
    where the result still is: the task finished, and was charged."""
    files = task.status.get("files") or []
    for file_name, source in task.sources.items():
        entry = delivered_entry(files, file_name, task.sources)
        if entry is None:
            reason = _undelivered(task)
            finish(report, hooks, FileResult(source.path, "failed", reason, task_id=task.task_id))
            continue
        folder = (out_dir / source.relative.parent) if out_dir else source.path.parent
        result = FileResult(source.path, "done", task_id=task.task_id)
        try:
            name = result_file_name(entry.get("processedFileName")) or _local_name(
                source, options, task.status
            )
            output = names.claim(folder, name, source.path)
            result.output = _fetch(api, task, file_name, "downloadLink", output, outage)
            names.written(result.output, source.path)
        except _FILE_FAILURES as exc:
            result.status = "failed"
            result.reason = (
                f"download failed: {describe(exc)}; the result stays on the server: "
                f"`upscayl-cloud client status {task.task_id}` has its link"
            )
        if thumbnails and result.output is not None:
            # The result is saved: a preview that cannot be is noted, not a failure.
            try:
                thumb = names.claim(folder, f"{result.output.stem}_thumb.webp", source.path)
                result.thumbnail = _fetch(api, task, file_name, "thumbnailLink", thumb, outage)
                names.written(result.thumbnail, source.path)
            except _FILE_FAILURES as exc:
                result.reason = f"thumbnail not saved: {describe(exc)}"
        finish(report, hooks, result)


def _undelivered(task: Watched) -> str:
    """Why a file of ``task`` has no result in its status: the task's own
    error, else (a completed task, charged, that does not list the file) where
    to look."""
    status = task.status
    if status.get("error"):
        return str(status["error"])
    state = str(status.get("status") or "failed")
    if state == "completed":
        return (
            f"task {task.task_id} completed, but its answer does not list this file: "
            f"`upscayl-cloud client status {task.task_id}` shows what it delivered"
        )
    return f"task {state}"


def _local_name(source: Source, options: Mapping[str, Any], status: Mapping[str, Any]) -> str:
    """The result's name when the server's is unusable: built from the local file
    and what was asked for (else what the task reports, else the spec's defaults)."""

    def pick(option: str, reported: str, default: str) -> object:
        return options.get(option) or status.get(reported) or default

    return local_name(
        source.path,
        pick("scale", "scale", "4"),
        pick("model", "model", MODELS[0]),
        pick("save_image_as", "saveImageAs", "jpg"),
    )


def _fetch(
    api: Client, task: Watched, file_name: str, link: str, dest: Path, outage: _DownloadOutage
) -> Path:
    """:func:`_fetch_once`, again and again through an outage (``outage``)."""
    while True:
        try:
            fetched = _fetch_once(api, task, file_name, link, dest)
        except UpscaylError as exc:
            if is_outage(exc) and outage.wait():
                continue
            raise
        outage.over()
        return fetched


def _fetch_once(api: Client, task: Watched, file_name: str, link: str, dest: Path) -> Path:
    """Download one link; an expired (410) or refused (403) link, or one the
    status at hand does not list, is looked for once more by asking for the
    status again (every status call signs fresh links). A result is checked
    against its ``finalFileSize`` (a shorter body is no result)."""
    for fresh in (False, True):
        if fresh:
            task.status = api.get_task_status(task.task_id)
        files = task.status.get("files") or []
        entry = delivered_entry(files, file_name, task.sources)
        if entry is None or not entry.get(link):
            if not fresh:
                continue
            raise ApiError("NOT_FOUND", f"the task no longer lists {link} for this file", 404)
        size = expected_size(entry.get("finalFileSize")) if link == "downloadLink" else None
        try:
            return api.download(str(entry[link]), dest, size=size)
        except ApiError as exc:
            if fresh or exc.status_code not in (403, 410):
                raise
    raise AssertionError("unreachable")  # pragma: no cover
