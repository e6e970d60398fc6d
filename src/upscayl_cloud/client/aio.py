"""The asyncio client: the same operations, signatures and retry rules as :class:`Client`.

For applications that already run an event loop (web backends, bots). It
shares request building and retry decisions with the sync client
(``_core``), so the two cannot drift apart; only sending and sleeping differ.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, cast

import httpx

from upscayl_cloud.client import _core
from upscayl_cloud.client._core import Call, RetryEvent, RetryPolicy
from upscayl_cloud.client.errors import (
    ApiError,
    ConnectionFailedError,
    StartUncertainError,
    TaskFailedError,
    WaitTimeoutError,
)
from upscayl_cloud.client.naming import partial_file
from upscayl_cloud.client.polling import PollPacing, PollSchedule
from upscayl_cloud.client.sync import Content
from upscayl_cloud.client.transfer import TransferGuard
from upscayl_cloud.client.types import HistoryPage, TaskStatus, UploadLink


class AsyncClient(PollPacing):
    """Asynchronous Upscayl Cloud client; use ``async with AsyncClient(...) as c``."""

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
        #: The deadline of ``wait()`` for its requests.
        self._deadlines = _core.Deadlines()
        self._http = httpx.AsyncClient(timeout=self._timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _attempts(
        self,
        label: str,
        idempotent: bool,
        send: Callable[[httpx.Timeout], Any],
    ) -> tuple[httpx.Response, bool]:
        """As ``Client._attempts``: send until a final answer, no retry
        waiting past the deadline of ``self._deadlines``."""
        deadline = self._deadlines.current()
        maybe_done = False
        for attempt in range(self.retry.attempts):
            last = attempt == self.retry.attempts - 1
            try:
                response: httpx.Response = await send(
                    _core.request_timeout(self._timeout, deadline)
                )
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
                await self._wait(RetryEvent(label, attempt, delay, None, repr(exc)))
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
            await self._wait(RetryEvent(label, attempt, delay, response.status_code, reason))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _wait(self, event: RetryEvent) -> None:
        if self.on_retry is not None:
            self.on_retry(event)
        await asyncio.sleep(event.delay)

    def _post(self, call: Call, timeout: httpx.Timeout) -> Any:
        """As ``Client._post``: with the key, never following a redirect."""
        return self._http.post(
            self.base_url + call.path,
            headers={"X-API-Key": self._key},
            json=call.json,
            data=call.data,
            files=call.files,
            timeout=timeout,
            follow_redirects=False,
        )

    async def _call(self, call: Call) -> dict[str, Any]:
        response, _ = await self._attempts(
            call.path, call.idempotent, lambda timeout: self._post(call, timeout)
        )
        return _core.payload(response)

    async def get_upload_url(
        self, name: str, file_type: str, size: int, multipart: bool | None = None
    ) -> UploadLink:
        body = await self._call(_core.upload_url_call(name, file_type, size, multipart))
        return cast(UploadLink, _core.data_object(body, "/get-upload-url"))

    async def put_upload(
        self, url: str, content: Content, size: int, content_type: str | None = None
    ) -> str | None:
        """As :meth:`Client.put_upload`: PUT bytes (or a re-openable chunk source)
        to a signed URL; returns the ETag. A chunk source is streamed, and read
        again from its start by a retry."""
        headers = {"Content-Length": str(size)}
        if content_type:
            headers["Content-Type"] = content_type

        def send(timeout: httpx.Timeout) -> Any:
            body = content if isinstance(content, bytes) else _stream(content)
            return self._http.put(url, content=body, headers=headers, timeout=timeout)

        response, _ = await self._attempts("PUT upload", True, send)
        if not response.is_success:
            raise _core.error_of(response)
        etag = response.headers.get("etag")
        return str(etag) if etag is not None else None

    async def complete_multipart_upload(
        self, upload_id: str, key: str, parts: list[tuple[int, str]]
    ) -> None:
        """As :meth:`Client.complete_multipart_upload`: a 400 is success only
        when it says the upload was completed already, after an attempt that
        may have gone through."""
        call = _core.complete_call(upload_id, key, parts)
        response, maybe_done = await self._attempts(call.path, True, lambda t: self._post(call, t))
        if maybe_done and _core.completed_before(response):
            return
        _core.payload(response)

    async def start_task(
        self,
        files: Sequence[Mapping[str, Any]] | None = None,
        *,
        file: tuple[str, bytes] | None = None,
        model: str | None = None,
        scale: str | int | None = None,
        save_image_as: str | None = None,
        enhance_face: bool | None = None,
    ) -> str:
        call = _core.start_task_call(files, file, model, scale, save_image_as, enhance_face)
        try:
            return _core.task_id_of(await self._call(call))
        except ApiError as exc:
            if exc.code != _core.BAD_RESPONSE:
                raise
            raise _core.start_uncertain(exc) from exc

    async def get_task_status(self, task_id: str) -> TaskStatus:
        body = await self._call(Call("/get-task-status", json={"taskId": task_id}))
        return cast(TaskStatus, _core.data_object(body, "/get-task-status"))

    async def get_history(self, **filters: Any) -> HistoryPage:
        body = await self._call(_core.history_call(**filters))
        return cast(HistoryPage, _core.history_page(body))

    async def iter_history(
        self, max_items: int | None = None, **filters: Any
    ) -> AsyncIterator[TaskStatus]:
        seen = 0
        offset = filters.pop("timestamp_offset", None)
        followed: set[int] = set() if offset is None else {offset}
        while True:
            page = await self.get_history(timestamp_offset=offset, **filters)
            for item in page["data"]:
                if max_items is not None and seen >= max_items:
                    return
                seen += 1
                yield item
            offset = _core.following_offset(page, followed)
            if offset is None:
                return

    async def capabilities(self) -> dict[str, Any] | None:
        """As :meth:`Client.capabilities`: the server's self-description, found
        through its served OpenAPI document; None when it has none."""
        try:
            path = _core.capabilities_path(await self._http.get(self.base_url + "/openapi.json"))
        except httpx.HTTPError:
            return None
        if path is None:
            return None
        url, headers = self.base_url + path, {"X-API-Key": self._key}

        def send(timeout: httpx.Timeout) -> Any:
            return self._http.get(url, headers=headers, timeout=timeout, follow_redirects=False)

        response, _ = await self._attempts(path, True, send)
        return _core.capabilities_data(response)

    async def wait(
        self,
        task_id: str,
        timeout: float | None = None,
        on_status: Callable[[TaskStatus], None] | None = None,
        raise_on_failure: bool = False,
    ) -> TaskStatus:
        """Poll (with backoff, within the hourly budget) until the task is
        completed or failed; ``on_status`` sees every answer. ``timeout``
        bounds the whole wait, as :meth:`Client.wait`'s does."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for delay in self.poll.delays():
            pause = self.poll_budget.take()
            # The budget's next poll comes after the deadline: one last poll
            # at the deadline, so that a finished task is never reported as
            # timed out unasked.
            last = deadline is not None and time.monotonic() + pause > deadline
            if last and deadline is not None:
                pause = max(0.0, deadline - time.monotonic())
            await asyncio.sleep(pause)
            try:
                with self._deadlines.bounded(deadline):
                    data = await self.get_task_status(task_id)
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
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def download(self, url: str, dest: Path, size: int | None = None) -> Path:
        """As :meth:`Client.download`: streamed (never whole in memory) into a
        partial file of its own, on the disk (fsync) before it is renamed over
        ``dest``; ``dest`` is used as given, and an existing one is replaced.
        Redirects are followed (no key is sent); a stalled transfer, or a body
        shorter than ``size``, fails as a read timeout would."""
        partial = partial_file(dest)
        try:

            async def send(timeout: httpx.Timeout) -> httpx.Response:
                stream = self._http.stream("GET", url, timeout=timeout, follow_redirects=True)
                async with stream as response:
                    if response.is_success:
                        guard = TransferGuard(self._timeout, size)
                        # Written in a worker thread, as _stream reads: a slow
                        # disk stalled every other coroutine on each 1 MiB.
                        out = await asyncio.to_thread(partial.open, "wb")
                        try:
                            held = bytearray()
                            async for chunk in response.aiter_bytes():
                                guard.took(len(chunk), response.request)
                                held += chunk
                                if len(held) >= _WRITE_BYTES:
                                    await asyncio.to_thread(_append, out, bytes(held))
                                    held.clear()
                            guard.finished(response.request)
                            await asyncio.to_thread(_append, out, bytes(held))
                            await asyncio.to_thread(_sync, out)
                        finally:
                            await asyncio.to_thread(out.close)
                    else:
                        await response.aread()
                    return response

            response, _ = await self._attempts("GET download", True, send)
            if not response.is_success:
                raise _core.error_of(response)
            os.replace(partial, dest)
        finally:
            partial.unlink(missing_ok=True)
        return dest


#: Bytes gathered before each write (one worker-thread hop per 1 MiB, not per
#: network read: the stall guard needs every read as it comes).
_WRITE_BYTES = 1 << 20


def _append(out: BinaryIO, chunk: bytes) -> None:
    out.write(chunk)


def _sync(out: BinaryIO) -> None:
    """The file's bytes on the disk before its rename (see ``Client.download``)."""
    out.flush()
    os.fsync(out.fileno())


async def _stream(content: Callable[[], Iterable[bytes]]) -> AsyncIterator[bytes]:
    """The chunks of a re-openable source, for httpx's async streaming.

    Each chunk is read in a worker thread: read on the event loop, every 1 MiB
    from a slow disk or a network share stalled all of the program's other
    coroutines (four parts upload at once)."""
    chunks = iter(await asyncio.to_thread(content))
    while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
        yield chunk
