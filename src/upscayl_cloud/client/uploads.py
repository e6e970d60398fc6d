"""Uploading a file through pre-signed URLs: one PUT, or parallel parts that resume.

A multipart upload writes a small JSON state file next to its source
(``.<name>.upscayl-upload.json``) holding the upload's id, its parts' URLs and
the ETag of every part already stored. Run the same upload again after an
interruption (crash, Ctrl-C, lost network) and only the missing parts are sent,
as long as the part URLs have not expired and the file is unchanged (same
size and modification time). The state file is removed once the upload is
complete; one that no longer matches is ignored and replaced.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from upscayl_cloud.client.errors import (
    ApiError,
    CompletionLimitedError,
    RateLimitedError,
    UploadCancelledError,
)
from upscayl_cloud.client.files import STATE_SUFFIX, sniff
from upscayl_cloud.client.sync import Client
from upscayl_cloud.client.types import UploadLink

#: Ask for multipart from this size on (the server's own default threshold).
MULTIPART_THRESHOLD_BYTES = 64 * 1024 * 1024
#: State older than this margin before its URLs expire is not worth resuming.
_EXPIRY_MARGIN_MS = 60_000
_CHUNK = 1 << 20
_STATE_VERSION = 1

BytesHook = Callable[[int], None]


def state_path(source: Path) -> Path:
    return source.with_name(f".{source.name}{STATE_SUFFIX}")


def uploaded_entry(link: Mapping[str, Any], file_type: str, size: int) -> dict[str, Any]:
    """The ``files`` item that start-task expects for an upload: the spec's
    ``UploadedFile`` requires ``fileType`` and ``fileSize``, which its
    get-upload-url answer need not repeat, so what was asked for fills in."""
    return {
        "fileName": link["fileName"],
        "fileType": link.get("fileType", file_type),
        "fileSize": link.get("fileSize", size),
    }


def _chunks(
    path: Path, offset: int, length: int, on_bytes: BytesHook | None
) -> Callable[[], Iterator[bytes]]:
    """A re-openable reader of ``length`` bytes at ``offset``; a retry re-reads the
    range and takes back the progress it had reported."""
    reported = 0

    def read() -> Iterator[bytes]:
        nonlocal reported
        if on_bytes is not None and reported:
            on_bytes(-reported)
        reported = 0
        with path.open("rb") as handle:
            handle.seek(offset)
            left = length
            while left > 0:
                chunk = handle.read(min(_CHUNK, left))
                if not chunk:
                    raise OSError(f"{path} shrank while it was being uploaded")
                left -= len(chunk)
                reported += len(chunk)
                if on_bytes is not None:
                    on_bytes(len(chunk))
                yield chunk

    return read


class _State:
    """The resumable state of one multipart upload, saved after every part."""

    def __init__(self, source: Path, base_url: str, link: dict[str, Any]) -> None:
        stat = source.stat()
        self.path = state_path(source)
        self.base_url = base_url
        self.size, self.mtime_ns = stat.st_size, stat.st_mtime_ns
        self.link = link
        self.etags: dict[int, str] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, source: Path, base_url: str) -> _State | None:
        """The saved state, if it still describes this file on this server."""
        try:
            saved = json.loads(state_path(source).read_text())
            stat = source.stat()
            fresh = saved["link"]["expiresAt"] > time.time() * 1000 + _EXPIRY_MARGIN_MS
            if (
                saved.get("version") != _STATE_VERSION
                or saved["baseUrl"] != base_url
                or (saved["size"], saved["mtimeNs"]) != (stat.st_size, stat.st_mtime_ns)
                or not fresh
            ):
                return None
            state = cls(source, base_url, saved["link"])
            state.etags = {int(n): str(etag) for n, etag in saved["etags"].items()}
            return state
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def record(self, number: int, etag: str) -> None:
        with self._lock:
            self.etags[number] = etag
            self.save()

    def save(self) -> None:
        """Write atomically; an unwritable folder only costs resumability."""
        body = {
            "version": _STATE_VERSION,
            "baseUrl": self.base_url,
            "size": self.size,
            "mtimeNs": self.mtime_ns,
            "link": self.link,
            "etags": {str(n): etag for n, etag in sorted(self.etags.items())},
        }
        temp = self.path.with_name(self.path.name + ".tmp")
        try:
            temp.write_text(json.dumps(body))
            os.replace(temp, self.path)
        except OSError:
            pass

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def upload_file(
    client: Client,
    path: Path,
    *,
    file_type: str | None = None,
    multipart_threshold: int = MULTIPART_THRESHOLD_BYTES,
    part_workers: int = 4,
    on_bytes: BytesHook | None = None,
    on_part: Callable[[int], None] | None = None,
    cancel: threading.Event | None = None,
    single: bool = False,
) -> dict[str, Any]:
    """Upload ``path``; returns the ``files`` entry for start-task.

    ``single``: one PUT of the whole file, multipart refused (``multipart:
    false``) and an earlier multipart upload of it left as it is; what a
    run does once completions are refused for the hour.

    Multipart is asked for from ``multipart_threshold`` bytes on, and used
    whenever the server offers it (it may have a lower threshold of its own).
    ``on_bytes`` receives byte deltas (negative when a retried range restarts);
    ``on_part`` is called after each part's ETag has been saved. Once
    ``cancel`` is set (Ctrl-C in the caller's thread), no new request starts:
    parts already on the wire finish and are recorded, a request waiting to
    be retried is not sent again, the upload is left incomplete with its
    state file kept, and :class:`UploadCancelledError` is raised, so that
    running it again sends only the missing parts. A completion refused for
    longer than is worth waiting raises :class:`CompletionLimitedError`
    (the parts and the state file are kept).
    """
    cancel = cancel or threading.Event()
    with client._cancellable(cancel):
        if single:
            return _upload_whole(client, path, file_type, on_bytes, cancel, multipart=False)
        return _upload(
            client, path, file_type, multipart_threshold, part_workers, on_bytes, on_part, cancel
        )


def _upload(
    client: Client,
    path: Path,
    file_type: str | None,
    multipart_threshold: int,
    part_workers: int,
    on_bytes: BytesHook | None,
    on_part: Callable[[int], None] | None,
    cancel: threading.Event,
) -> dict[str, Any]:
    """:func:`upload_file`, its retry waits already tied to ``cancel``."""
    size = path.stat().st_size
    file_type = file_type or _sniffed(path)
    wants_multipart = size >= multipart_threshold
    # Resume whatever was started, even if the server (not us) chose multipart.
    state = _State.load(path, client.base_url)
    if state is not None:
        counted = 0

        def count(delta: int) -> None:
            nonlocal counted
            counted += delta
            if on_bytes is not None:
                on_bytes(delta)

        try:
            return _send_parts(client, path, state, part_workers, count, on_part, cancel, file_type)
        except ApiError as exc:
            if exc.status_code not in (400, 403, 404, 410):
                raise
            state.discard()  # the server forgot it (expired, swept): start over
            if on_bytes is not None and counted:
                on_bytes(-counted)
    _check(cancel, path)
    link = client.get_upload_url(path.name, file_type, size, multipart=wants_multipart or None)
    if link.get("uploadId") and link.get("parts"):
        state = _State(path, client.base_url, dict(link))
        state.save()
        return _send_parts(client, path, state, part_workers, on_bytes, on_part, cancel, file_type)
    return _put_whole(client, path, file_type, size, link, on_bytes, cancel)


def _upload_whole(
    client: Client,
    path: Path,
    file_type: str | None,
    on_bytes: BytesHook | None,
    cancel: threading.Event,
    multipart: bool | None,
) -> dict[str, Any]:
    """One link for the whole file (``multipart`` as asked for), one PUT."""
    size = path.stat().st_size
    file_type = file_type or _sniffed(path)
    _check(cancel, path)
    link = client.get_upload_url(path.name, file_type, size, multipart=multipart)
    return _put_whole(client, path, file_type, size, link, on_bytes, cancel)


def _put_whole(
    client: Client,
    path: Path,
    file_type: str,
    size: int,
    link: UploadLink,
    on_bytes: BytesHook | None,
    cancel: threading.Event,
) -> dict[str, Any]:
    _check(cancel, path)
    client.put_upload(link["uploadURL"], _chunks(path, 0, size, on_bytes), size, file_type)
    return uploaded_entry(link, file_type, size)


def _sniffed(path: Path) -> str:
    with path.open("rb") as handle:
        return sniff(handle.read(16)) or "application/octet-stream"


def _send_parts(
    client: Client,
    path: Path,
    state: _State,
    workers: int,
    on_bytes: BytesHook | None,
    on_part: Callable[[int], None] | None,
    cancel: threading.Event,
    file_type: str,
) -> dict[str, Any]:
    link = state.link
    part_size, size = int(link["partSize"]), int(link["fileSize"])
    done_bytes = sum(_part_length(n, part_size, size) for n in state.etags)
    if on_bytes is not None and done_bytes:
        on_bytes(done_bytes)
    todo = [p for p in link["parts"] if int(p["partNumber"]) not in state.etags]

    stop = threading.Event()  # one failed part: start no more (the rest resume later)

    def send(part: dict[str, Any]) -> None:
        if stop.is_set() or cancel.is_set():
            return
        try:
            with client._cancellable(cancel):  # a thread of its own: tied again
                _send_part(part)
        except BaseException:
            stop.set()
            raise

    def _send_part(part: dict[str, Any]) -> None:
        number = int(part["partNumber"])
        length = _part_length(number, part_size, size)
        reader = _chunks(path, (number - 1) * part_size, length, on_bytes)
        etag = client.put_upload(part["uploadURL"], reader, length)
        if not etag:
            raise ApiError("BAD_RESPONSE", f"part {number} was stored without an ETag", 200)
        state.record(number, etag)
        if on_part is not None:
            on_part(number)

    if todo:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = [pool.submit(send, part) for part in todo]
            try:
                finished, _pending = wait(futures, return_when=FIRST_EXCEPTION)
            except BaseException:  # Ctrl-C in this (the caller's) thread
                cancel.set()  # only the parts on the wire finish; the state stays
                for future in futures:
                    future.cancel()
                raise
            failed = [f for f in finished if f.exception() is not None]
            if failed:
                for future in futures:
                    future.cancel()
                raise failed[0].exception()  # type: ignore[misc]
    # Parts skipped after a cancel are missing: completing now would fail, and
    # discarding the state would lose the parts that are stored.
    _check(cancel, path)
    try:
        client.complete_multipart_upload(link["uploadId"], link["key"], sorted(state.etags.items()))
    except RateLimitedError as exc:
        # Named apart: every later multipart upload of the hour meets it too.
        status = exc.status_code or 429
        raise CompletionLimitedError(exc.code, exc.message, status, exc.retry_after) from exc
    state.discard()
    return uploaded_entry(link, file_type, size)


def _check(cancel: threading.Event, path: Path) -> None:
    if cancel.is_set():
        raise UploadCancelledError(f"upload of {path.name} was interrupted")


def _part_length(number: int, part_size: int, size: int) -> int:
    return max(0, min(part_size, size - (number - 1) * part_size))
