"""The blocking client: one method per operation of the spec, retries built in.

API calls carry ``X-API-Key``; the signed upload and download links are
fetched *without* it, since they may point at another host (S3) that has no
business seeing the key.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import httpx

from upscayl_cloud.client import _core
from upscayl_cloud.client._core import Call, RetryEvent, RetryPolicy
from upscayl_cloud.client.errors import (
    ApiError,
    ConnectionFailedError,
    StartUncertainError,
    TaskFailedError,
    UploadCancelledError,
    WaitTimeoutError,
)
from upscayl_cloud.client.naming import partial_file
from upscayl_cloud.client.polling import PollPacing, PollSchedule
from upscayl_cloud.client.transfer import TransferGuard
from upscayl_cloud.client.types import HistoryPage, TaskStatus, UploadLink

Content = bytes | Callable[[], Iterable[bytes]]


class Client(PollPacing):
    """Synchronous Upscayl Cloud client (thread-safe: parts upload in parallel)."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        poll: PollSchedule | None = None,
        on_retry: Callable[[RetryEvent], None] | None = None,
    ) -> None:
        self.base_url, self._key = _core.resolve(base_url, api_key)
        self.retry = retry or RetryPolicy()
        self.poll = poll or PollSchedule()  # and its budgets (PollPacing)
        self.on_retry = on_retry
        self._timeout = httpx.Timeout(timeout, connect=10.0)
        #: The deadline of ``wait()`` and ``upscale()`` for their requests.
        self._deadlines = _core.Deadlines()
        self._http = httpx.Client(timeout=self._timeout)
        #: Per thread: the event that ends its retry waits (see ``_cancellable``).
        self._waits = threading.local()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the retry loop ------------------------------------------------------

    def _attempts(
        self,
        label: str,
        idempotent: bool,
        send: Callable[[httpx.Timeout], httpx.Response],
    ) -> tuple[httpx.Response, bool]:
        """Send until a final answer; returns it and whether an earlier attempt
        may already have been carried out (see ``_core.ambiguous``).

        ``send`` gets the timeout to send with: the client's own, cut to what
        is left before the deadline of ``self._deadlines`` when there is one
        (``wait()``, ``upscale()``). No retry waits past that deadline:
        :class:`~_core.DeadlinePassed` is raised instead."""
        deadline = self._deadlines.current()
        maybe_done = False
        for attempt in range(self.retry.attempts):
            last = attempt == self.retry.attempts - 1
            try:
                response = send(_core.request_timeout(self._timeout, deadline))
            except _core.HTTP_FAILURES as exc:
                refused = _core.unusable(label, exc, idempotent)
                if refused is not None:
                    raise refused from exc
                delay = _core.transport_delay(self.retry, attempt, idempotent, exc)
                if delay is None:
                    raise StartUncertainError(
                        f"{label}: {exc!r} after the request was sent; check the history "
                        "before starting it again"
                    ) from exc
                if _core.beyond(deadline, delay):
                    raise _core.DeadlinePassed(f"{label}: {exc!r}") from exc
                if last:
                    raise ConnectionFailedError(f"{label}: {exc!r}") from exc
                maybe_done = maybe_done or _core.ambiguous(exc, None)
                self._wait(RetryEvent(label, attempt, delay, None, repr(exc)))
                continue
            if response.is_success:
                return response, maybe_done
            delay = _core.status_delay(self.retry, attempt, idempotent, response)
            if delay is not None and _core.beyond(deadline, delay):
                raise _core.DeadlinePassed(f"{label}: {response.status_code}")
            if delay is None or last:
                return response, maybe_done
            maybe_done = maybe_done or _core.ambiguous(None, response)
            reason = _core.error_of(response).code
            self._wait(RetryEvent(label, attempt, delay, response.status_code, reason))
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, event: RetryEvent) -> None:
        """Sleep before the next attempt, unless this thread's uploads were
        cancelled meanwhile (then :class:`UploadCancelledError`)."""
        if self.on_retry is not None:
            self.on_retry(event)
        cancel: threading.Event | None = getattr(self._waits, "cancel", None)
        if cancel is None:
            time.sleep(event.delay)
        elif cancel.wait(event.delay):
            raise UploadCancelledError(f"{event.path}: interrupted while waiting to retry")

    @contextmanager
    def _cancellable(self, cancel: threading.Event) -> Iterator[None]:
        """Within it, this thread's retry waits end as soon as ``cancel`` is set.

        Uploads run in worker threads; Ctrl-C lands in the main thread, which
        sets ``cancel`` and waits for them. A worker asleep before its next
        try (a 503's ``Retry-After: 10``) slept it out and tried again, four
        times: 40 s before Ctrl-C took effect."""
        earlier = getattr(self._waits, "cancel", None)
        self._waits.cancel = cancel
        try:
            yield
        finally:
            self._waits.cancel = earlier

    def _post(self, call: Call, timeout: httpx.Timeout) -> httpx.Response:
        """An API call: with the key, and never following a redirect (httpx
        would carry ``X-API-Key`` to wherever it points)."""
        return self._http.post(
            self.base_url + call.path,
            headers={"X-API-Key": self._key},
            json=call.json,
            data=call.data,
            files=call.files,
            timeout=timeout,
            follow_redirects=False,
        )

    def _call(self, call: Call) -> dict[str, Any]:
        response, _ = self._attempts(
            call.path, call.idempotent, lambda timeout: self._post(call, timeout)
        )
        return _core.payload(response)

    # -- operations ----------------------------------------------------------

    def get_upload_url(
        self, name: str, file_type: str, size: int, multipart: bool | None = None
    ) -> UploadLink:
        """A pre-signed upload (and, for multipart, its parts' URLs): ``data`` of the answer."""
        body = self._call(_core.upload_url_call(name, file_type, size, multipart))
        return cast(UploadLink, _core.data_object(body, "/get-upload-url"))

    def put_upload(
        self, url: str, content: Content, size: int, content_type: str | None = None
    ) -> str | None:
        """PUT bytes (or a re-openable chunk source) to a signed URL; returns the ETag.

        ``content`` may be a function returning chunks so that a retry re-reads
        the file instead of holding it in memory.
        """
        headers = {"Content-Length": str(size)}
        if content_type:
            headers["Content-Type"] = content_type

        def send(timeout: httpx.Timeout) -> httpx.Response:
            body = content if isinstance(content, bytes) else iter(content())
            return self._http.put(url, content=body, headers=headers, timeout=timeout)

        response, _ = self._attempts("PUT upload", True, send)
        if not response.is_success:
            raise _core.error_of(response)
        etag = response.headers.get("etag")
        return str(etag) if etag is not None else None

    def complete_multipart_upload(
        self, upload_id: str, key: str, parts: list[tuple[int, str]]
    ) -> None:
        """Join uploaded parts ``[(number, etag), ...]`` into the object.

        This server answers a repeated completion with success. A server that
        answers it 400, saying the upload was completed already (see
        ``_core.completed_before``), is taken at its word only when an earlier
        attempt may have gone through; any other 400 is raised (the state
        file of ``upload_file`` is kept). This server's start-task checks
        that the object exists; the spec does not say that every server's
        does.
        """
        call = _core.complete_call(upload_id, key, parts)
        response, maybe_done = self._attempts(call.path, True, lambda t: self._post(call, t))
        if maybe_done and _core.completed_before(response):
            return
        _core.payload(response)

    def start_task(
        self,
        files: Sequence[Mapping[str, Any]] | None = None,
        *,
        file: tuple[str, bytes] | None = None,
        model: str | None = None,
        scale: str | int | None = None,
        save_image_as: str | None = None,
        enhance_face: bool | None = None,
    ) -> str:
        """Queue a task over uploaded ``files`` (or one direct ``file``); returns its id.

        Never repeated once the server may have read it (see ``docs/client.md``).
        """
        call = _core.start_task_call(files, file, model, scale, save_image_as, enhance_face)
        try:
            return _core.task_id_of(self._call(call))
        except ApiError as exc:
            if exc.code != _core.BAD_RESPONSE:
                raise
            raise _core.start_uncertain(exc) from exc

    def get_task_status(self, task_id: str) -> TaskStatus:
        body = self._call(Call("/get-task-status", json={"taskId": task_id}))
        return cast(TaskStatus, _core.data_object(body, "/get-task-status"))

    def get_history(self, **filters: Any) -> HistoryPage:
        """One page: ``{"data": [...], "pagination": {...}}``. Filters as in the spec
        (``timestamp_offset``, ``batch``, ``failed``, ``limit``, ``processed``)."""
        return cast(HistoryPage, _core.history_page(self._call(_core.history_call(**filters))))

    def iter_history(self, max_items: int | None = None, **filters: Any) -> Iterator[TaskStatus]:
        """Every matching task, newest first, following ``nextOffset`` page by page."""
        seen = 0
        offset = filters.pop("timestamp_offset", None)
        followed: set[int] = set() if offset is None else {offset}
        while True:
            page = self.get_history(timestamp_offset=offset, **filters)
            for item in page["data"]:
                if max_items is not None and seen >= max_items:
                    return
                seen += 1
                yield item
            offset = _core.following_offset(page, followed)
            if offset is None:
                return

    def capabilities(self) -> dict[str, Any] | None:
        """The server's own description of its models and features, if it has one.

        The spec has no such operation; a server may add one (e.g. to say whether
        face enhancement is available). It is found through the served OpenAPI
        document (any GET path naming "capabilities"), so its exact path does not
        matter; None when there is none.
        """
        try:
            path = _core.capabilities_path(self._http.get(self.base_url + "/openapi.json"))
        except httpx.HTTPError:
            return None
        if path is None:
            return None
        url, headers = self.base_url + path, {"X-API-Key": self._key}

        def send(timeout: httpx.Timeout) -> httpx.Response:
            return self._http.get(url, headers=headers, timeout=timeout, follow_redirects=False)

        response, _ = self._attempts(path, True, send)
        return _core.capabilities_data(response)

    def wait(
        self,
        task_id: str,
        timeout: float | None = None,
        on_status: Callable[[TaskStatus], None] | None = None,
        raise_on_failure: bool = False,
    ) -> TaskStatus:
        """Poll (with backoff) until the task is completed or failed; returns its status.

        ``timeout`` bounds the whole wait: no poll's retries wait past it,
        and a poll sent at it is given :data:`~_core.FINAL_REQUEST_SECONDS`
        at most to be answered (else :class:`WaitTimeoutError`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for delay in self.poll.delays():
            pause = self.poll_budget.take()
            # The budget's next poll comes after the deadline: one last poll
            # at the deadline, so that a finished task is never reported as
            # timed out unasked.
            last = deadline is not None and time.monotonic() + pause > deadline
            if last and deadline is not None:
                pause = max(0.0, deadline - time.monotonic())
            time.sleep(pause)
            try:
                with self._deadlines.bounded(deadline):
                    data = self.get_task_status(task_id)
            except _core.DeadlinePassed:
                raise WaitTimeoutError(task_id, timeout or 0) from None
            if on_status is not None:
                on_status(data)
            if data.get("status") in _core.FINISHED:
                if raise_on_failure and data["status"] == "failed":
                    raise TaskFailedError(task_id, str(data.get("error") or "task failed"))
                return data
            if last or (deadline is not None and time.monotonic() + delay > deadline):
                raise WaitTimeoutError(task_id, timeout or 0)
            time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def download(self, url: str, dest: Path, size: int | None = None) -> Path:
        """GET a signed link into ``dest`` atomically (a partial file never appears).

        ``dest`` is used as given: a caller naming it after a server's answer should
        pass that name through :func:`~upscayl_cloud.client.naming.result_file_name`.
        Bytes go to a partial file of its own (two downloads to one name never mix)
        that is renamed over ``dest``; an existing ``dest`` is replaced. The
        bytes reach the disk (fsync) before the rename: else a power cut could
        leave a name that says "result" on a short file, which the next run
        would take for a finished one.

        Redirects are followed (a link may answer 302 to a CDN or a store),
        here only: the link is fetched without ``X-API-Key``, so no hop sees
        it. A transfer slower than ``transfer.MIN_DOWNLOAD_RATE`` over a window
        of the read timeout fails as a read timeout would (retried), and so
        does a body shorter than ``size`` (the task's ``finalFileSize``)."""
        partial = partial_file(dest)
        try:

            def send(timeout: httpx.Timeout) -> httpx.Response:
                stream = self._http.stream("GET", url, timeout=timeout, follow_redirects=True)
                with stream as response:
                    if response.is_success:
                        guard = TransferGuard(self._timeout, size)
                        with partial.open("wb") as out:
                            for chunk in response.iter_bytes():
                                guard.took(len(chunk), response.request)
                                out.write(chunk)
                            guard.finished(response.request)
                            out.flush()
                            os.fsync(out.fileno())
                    else:
                        response.read()
                    return response

            response, _ = self._attempts("GET download", True, send)
            if not response.is_success:
                raise _core.error_of(response)
            os.replace(partial, dest)
        finally:
            partial.unlink(missing_ok=True)
        return dest
