"""Exceptions of the client: every failure a caller can meet, with the spec's code.

Callers branch on ``code`` (the spec's ``error`` field, e.g. ``INSUFFICIENT_CREDITS``)
rather than on HTTP statuses or message text, so the server's error body is kept
whole. Failures that never reached a server response get codes of our own
(``CONNECTION_ERROR``, ``START_UNCERTAIN``, ``TASK_FAILED``, ``TIMEOUT``,
``CANCELLED``, and ``BAD_RESPONSE`` for an answer that cannot be read at all)
so that one ``except UpscaylError`` covers everything.
"""

from __future__ import annotations

from pathlib import Path


class UpscaylError(Exception):
    """Base of every client error: a machine-readable ``code`` and a human ``message``."""

    def __init__(self, code: str, message: str, status_code: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status_code = status_code


class ApiError(UpscaylError):
    """The server answered with an error body (``{"error": CODE, "message": ...}``)."""

    def __init__(
        self,
        code: str,
        message: str,
        status_code: int,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(code, message, status_code)
        self.retry_after = retry_after


class RateLimitedError(ApiError):
    """429 that we did not (or could no longer) wait out; ``retry_after`` says how long."""


class CompletionLimitedError(RateLimitedError):
    """complete-multipart-upload's 429, not waited out: its own limit (the
    spec: 50 an hour) is spent. The parts stay stored, with the upload's state
    file: the same upload completes once the limit allows. ``upscale()``
    sends no further file of multipart size in that run, since each would
    upload every part only to be refused the same way."""


class ConnectionFailedError(UpscaylError):
    """No usable response after every retry (refused, reset, timed out)."""

    def __init__(self, message: str) -> None:
        super().__init__("CONNECTION_ERROR", message)


class BadResponseError(UpscaylError):
    """An answer, or a link an answer gave, that HTTP itself cannot use: a
    body whose ``Content-Encoding`` does not decode, redirects without end, a
    link that is no URL or not ``http(s)``. Asking again gets the same, so it
    is neither retried nor waited out as an outage; before, httpx's own
    exception escaped and ended a whole ``upscale()`` run, its other results
    never downloaded. ``code`` is ``BAD_RESPONSE``, as for an
    :class:`ApiError` whose success answer is not the API's, but with no
    ``status_code``."""

    def __init__(self, message: str) -> None:
        super().__init__("BAD_RESPONSE", message)


class StartUncertainError(UpscaylError):
    """start-task may or may not have been accepted, so it was not retried.

    Retrying blindly could queue (and charge) the same work twice; the caller
    should look at ``get-upscayl-history`` before trying again.
    """

    def __init__(self, message: str) -> None:
        super().__init__("START_UNCERTAIN", message)


class TaskFailedError(UpscaylError):
    """A task ended ``failed``; ``message`` is the task's own ``error``."""

    def __init__(self, task_id: str, message: str) -> None:
        super().__init__("TASK_FAILED", message)
        self.task_id = task_id


class WaitTimeoutError(UpscaylError):
    """A task was still running when the caller's deadline passed (it keeps running)."""

    def __init__(self, task_id: str, seconds: float) -> None:
        super().__init__("TIMEOUT", f"task {task_id} not finished after {seconds:.0f} s")
        self.task_id = task_id


class UploadCancelledError(UpscaylError):
    """An upload stopped because its caller was interrupted (Ctrl-C); a
    multipart upload keeps its state file, so running it again resumes it."""

    def __init__(self, message: str) -> None:
        super().__init__("CANCELLED", message)


class UpscaleInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``upscale()``. Tasks already started run on, and were
    charged: ``task_ids`` names them (``get-task-status`` finds their results;
    running the same files again would pay twice). ``maybe_started`` lists
    the files of a start-task that was on the wire when Ctrl-C came: the
    server may have created (and charged) their task although no id came
    back, so ``client history`` is the place to look before sending them
    again. ``report`` holds what was reported before. A KeyboardInterrupt,
    so code that catches one still does."""

    def __init__(
        self, task_ids: list[str], report: object, maybe_started: list[Path] | None = None
    ) -> None:
        started = ", ".join(task_ids) or "none"
        message = f"interrupted; tasks already started: {started}"
        if maybe_started:
            message += (
                f"; start-task was under way for {len(maybe_started)} more file(s), whose "
                "task may have been started (and charged): look at `upscayl-cloud client "
                "history` before sending them again"
            )
        super().__init__(message)
        self.task_ids = task_ids
        self.maybe_started = list(maybe_started or [])
        self.report = report


class UnwritableOutputError(PermissionError):
    """A folder that ``upscale()`` would write results to cannot take a file
    (a read-only file system, no permission): raised before anything is
    uploaded. Found only at the first download, it came after the server
    had processed, and charged for, every image."""


#: Answers of a server that is down or restarting, after the client's own retries.
_OUTAGE_STATUSES = frozenset({500, 502, 503, 504})


def is_outage(exc: UpscaylError) -> bool:
    """Whether ``exc`` says the server could not be asked (it was unreachable,
    or down or restarting), not that it refused: asking again later may work."""
    if isinstance(exc, ConnectionFailedError):
        return True
    if not isinstance(exc, ApiError):
        return False
    # BAD_RESPONSE: a success that was not the API's (a proxy's page, a cut-off body).
    return exc.status_code in _OUTAGE_STATUSES or exc.code == "BAD_RESPONSE"


def describe(exc: Exception) -> str:
    """One line for a report: ``CODE: message`` for ours, the type otherwise."""
    if isinstance(exc, UpscaylError):
        return f"{exc.code}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"
