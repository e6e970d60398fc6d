"""What the sync and async clients share: settings, retry decisions, request shapes.

Everything here is free of I/O so that ``sync.py`` and ``aio.py`` differ only in
``await``: both build the same requests, classify the same failures and parse
the same bodies.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from upscayl_cloud.client.errors import (
    ApiError,
    BadResponseError,
    RateLimitedError,
    StartUncertainError,
    UpscaylError,
)

DEFAULT_URL = "http://127.0.0.1:8000"
#: The spec's model enum (``quick-clear-4x`` is the fastest, ``upscayl-standard-4x``
#: the server's default).
MODELS: tuple[str, ...] = (
    "upscayl-standard-4x",
    "upscayl-lite-4x",
    "clear-boost-4x",
    "crystal-plus-4x",
    "digital-art-4x",
    "digital-art-plus-4x",
    "natural-max-4x",
    "natural-plus-4x",
    "nature-boost-4x",
    "pure-boost-4x",
    "quick-clear-4x",
    "texture-boost-4x",
)
SCALES: tuple[str, ...] = ("2", "4", "8")
FORMATS: tuple[str, ...] = ("png", "jpg", "webp")
FINISHED = frozenset({"completed", "failed"})


def server_url(base_url: str | None) -> str:
    """The server a client talks to: the argument, else ``UPSCAYL_URL``, else
    the default."""
    return (base_url or os.environ.get("UPSCAYL_URL") or DEFAULT_URL).rstrip("/")


def resolve(base_url: str | None, api_key: str | None) -> tuple[str, str]:
    """Arguments win over ``UPSCAYL_URL`` / ``UPSCAYL_API_KEY``; a key is required."""
    url = server_url(base_url)
    problem = url_problem(url)
    if problem is not None:
        raise UpscaylError("INVALID_URL", problem)
    key = api_key or os.environ.get("UPSCAYL_API_KEY")
    if not key:
        raise UpscaylError("MISSING_API_KEY", "pass api_key or set UPSCAYL_API_KEY")
    return url, key


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a server's base URL, or None. Without a scheme
    (``localhost:8000``), httpx fails every request and the client used to
    retry each five times before saying anything."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        return f"{url!r} is not a URL: {exc}"
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return f"{url!r} is not an http:// or https:// URL with a host (e.g. {DEFAULT_URL})"
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try before giving up.

    Delays are "full jitter" exponential backoff (uniform in ``[0, base·2^n]``,
    capped) so that many clients failing together do not come back together. A
    429 waits its ``Retry-After`` (plus a little jitter) unless that is longer
    than ``max_retry_after``: an hourly limit is better reported than slept on.
    """

    attempts: int = 5
    backoff_base: float = 0.5
    backoff_cap: float = 20.0
    max_retry_after: float = 120.0
    retry_after_jitter: float = 0.25

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1 (one try), not {self.attempts}")
        for name in ("backoff_base", "backoff_cap", "max_retry_after", "retry_after_jitter"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")

    def backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.backoff_cap, self.backoff_base * 2**attempt))

    def rate_limit_wait(self, retry_after: float | None, attempt: int) -> float | None:
        """Seconds to wait after a 429, or None when it is not worth waiting."""
        if retry_after is None:
            return self.backoff(attempt + 2)
        if retry_after > self.max_retry_after:
            return None
        return retry_after + random.uniform(0, self.retry_after_jitter)


#: Transport failures raised before the request was complete on the wire: the
#: server cannot have acted on it, so even start-task may be sent again.
NOT_SENT: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.WriteError,
    httpx.WriteTimeout,
)


@dataclass(frozen=True)
class Call:
    """One API operation: where, what, and whether repeating it is harmless."""

    path: str
    json: dict[str, Any] | None = None
    data: dict[str, str] | None = None
    files: list[tuple[str, tuple[str | None, bytes | str, str]]] | None = None
    #: False for start-task: the server may have queued (and charged) it already.
    idempotent: bool = True


def retryable_status(status: int, idempotent: bool) -> bool:
    """5xx may have been half-done, so only idempotent calls repeat them; a 503
    (nothing was accepted: overloaded or not ready) and a 408 (the body came
    too slowly or stalled, so the request was never carried out: RFC 9110
    lets a client repeat it) repeat for every call."""
    if status in (408, 503):
        return True
    return idempotent and status in (500, 502, 504)


def retry_after_of(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds: delta-seconds (ours) or an HTTP date (proxies)."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_of(response: httpx.Response) -> ApiError:
    """The spec's ``{"error", "message"}`` as an exception (any body shape tolerated)."""
    code, message = f"HTTP_{response.status_code}", response.reason_phrase or "error"
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict):
        code = str(body.get("error") or code)
        message = str(body.get("message") or message)
    kind = RateLimitedError if response.status_code == 429 else ApiError
    return kind(code, message, response.status_code, retry_after_of(response))


#: The code of a success answer that is not what the spec says (a proxy's or
#: captive portal's HTML page, a cut-off body): an outage, asked again later.
BAD_RESPONSE = "BAD_RESPONSE"


def payload(response: httpx.Response) -> dict[str, Any]:
    """A success answer's JSON object, else an :class:`ApiError`: every failure
    a caller meets is an ``UpscaylError``, a page that is no JSON too."""
    if response.is_success:
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            kind = response.headers.get("content-type", "no content type")
            raise ApiError(
                BAD_RESPONSE,
                f"the server answered {response.status_code} with no JSON ({kind}): "
                "a proxy or portal in the way?",
                response.status_code,
            ) from None
        if not isinstance(body, dict):
            raise ApiError(
                BAD_RESPONSE, "the server answered with a non-object", response.status_code
            )
        return body
    raise error_of(response)


def data_object(body: Mapping[str, Any], path: str) -> dict[str, Any]:
    """An answer's ``data`` object, which every success of the spec's has."""
    data = body.get("data")
    if not isinstance(data, dict):
        raise ApiError(BAD_RESPONSE, f"{path} answered without a data object", 200)
    return data


def task_id_of(body: Mapping[str, Any]) -> str:
    task_id = data_object(body, "/start-task").get("taskId")
    if not isinstance(task_id, str) or not task_id:
        raise ApiError(BAD_RESPONSE, "/start-task answered without a taskId", 200)
    return task_id


def start_uncertain(exc: ApiError) -> StartUncertainError:
    """start-task answered success, but not with a task id: it may have been
    queued (and charged), so this is no refusal to report as a file's fault."""
    return StartUncertainError(
        f"start-task answered {exc.status_code}, but {exc.message}; the task may have "
        "been queued: look at get-upscayl-history before sending it again"
    )


def history_page(body: dict[str, Any]) -> dict[str, Any]:
    """A history answer, checked for its ``data`` list."""
    if not isinstance(body.get("data"), list):
        raise ApiError(BAD_RESPONSE, "/get-upscayl-history answered without a data list", 200)
    return body


def following_offset(page: Mapping[str, Any], followed: set[int]) -> int | None:
    """:func:`next_offset`, or None when it was followed already (a server
    repeating one offset would be paged forever). Any direction is taken:
    the spec does not say which way its pages go."""
    following = next_offset(page)
    if following is None or following in followed:
        return None
    followed.add(following)
    return following


def capabilities_path(document: httpx.Response) -> str | None:
    """The GET path naming "capabilities" in a served OpenAPI document (the
    spec has no such operation; a server may add one), or None."""
    try:
        paths = document.json().get("paths", {}) if document.is_success else {}
        return next((p for p, ops in paths.items() if "capabilit" in p and "get" in ops), None)
    except (ValueError, AttributeError):
        return None


def capabilities_data(response: httpx.Response) -> dict[str, Any] | None:
    """The capabilities answer's ``data`` (or the whole body), if an object."""
    body = payload(response)
    data = body.get("data", body)
    return data if isinstance(data, dict) else None


def wire_name(name: str) -> str:
    """``name`` as it can be sent: each lone surrogate replaced by U+FFFD.

    On Linux a file name that is not valid UTF-8 (``zz\\xe9.png``, Latin-1)
    reaches Python as a ``str`` with lone surrogates, which no JSON body or
    form header can encode: httpx raised ``UnicodeEncodeError`` and ended the
    whole ``upscale()`` run, tasks already started (and charged) unreported.
    Only the name sent changes; the local path is read and written as is."""
    return _SURROGATES.sub("\ufffd", name)


_SURROGATES = re.compile("[\ud800-\udfff]")


def upload_url_call(name: str, file_type: str, size: int, multipart: bool | None = None) -> Call:
    body: dict[str, Any] = {
        "originalFileName": wire_name(name),
        "fileType": file_type,
        "fileSize": size,
    }
    if multipart is not None:
        body["multipart"] = multipart  # our server's extension; others ignore it
    # Repeating it only leaves an unused upload record that expires on its own.
    return Call("/get-upload-url", json=body)


def start_task_call(
    files: Sequence[Mapping[str, Any]] | None,
    file: tuple[str, bytes] | None,
    model: str | None,
    scale: str | int | None,
    save_image_as: str | None,
    enhance_face: bool | None,
) -> Call:
    """The spec's multipart form: ``files`` as one JSON array part, or one ``file``."""
    if (files is None) == (file is None):
        raise ValueError("give exactly one of files (uploaded) or file (direct)")
    fields = {
        "model": model,
        "scale": None if scale is None else str(scale),
        "saveImageAs": save_image_as,
        "enhanceFace": None if enhance_face is None else str(enhance_face).lower(),
    }
    data = {k: v for k, v in fields.items() if v is not None}
    parts: list[tuple[str, tuple[str | None, bytes | str, str]]]
    if files is not None:
        parts = [("files", (None, json.dumps([dict(f) for f in files]), "application/json"))]
    else:
        assert file is not None
        parts = [("file", (wire_name(file[0]), file[1], "application/octet-stream"))]
    return Call("/start-task", data=data, files=parts, idempotent=False)


def history_call(
    timestamp_offset: int | None = None,
    batch: bool | None = None,
    failed: bool | None = None,
    limit: int | None = None,
    processed: str | None = None,
) -> Call:
    fields = {
        "timestampOffset": timestamp_offset,
        "batch": batch,
        "failed": failed,
        "limit": limit,
        "processed": processed,
    }
    return Call("/get-upscayl-history", json={k: v for k, v in fields.items() if v is not None})


def next_offset(page: Mapping[str, Any]) -> int | None:
    """The ``timestampOffset`` of a history page's next page, or None when it
    is the last (or says so in a way that cannot be followed)."""
    pagination = page.get("pagination")
    if not isinstance(pagination, Mapping):
        return None
    offset = pagination.get("nextOffset")
    if not pagination.get("hasMore") or not isinstance(offset, int) or isinstance(offset, bool):
        return None
    return offset


def completed_before(response: httpx.Response) -> bool:
    """Whether complete-multipart-upload's 400 says that the upload was
    completed already: this server's store says "unknown or already completed
    upload id" (its S3 backend "unknown, aborted or already completed upload
    id"), and a server that passes S3's answer on says ``NoSuchUpload``. Only
    such a 400, after an attempt that may have gone through, is taken as
    success: any 400 used to be (a wrong ETag too), and the upload's state
    file was deleted with the parts still unjoined."""
    if response.status_code != 400:
        return False
    refusal = error_of(response)
    said = f"{refusal.code} {refusal.message}"
    return bool(_COMPLETED_BEFORE.search(said))


_COMPLETED_BEFORE = re.compile(r"already\s+(?:been\s+)?completed|NoSuchUpload", re.IGNORECASE)


def complete_call(upload_id: str, key: str, parts: list[tuple[int, str]]) -> Call:
    listed = [{"PartNumber": n, "ETag": etag} for n, etag in sorted(parts)]
    return Call(
        "/complete-multipart-upload",
        json={"data": {"uploadId": upload_id, "key": key, "parts": listed}},
    )


#: What sending a request may raise: httpx's failures, and a link it cannot
#: parse (``InvalidURL``; a host name IDNA refuses, such as a label over 63
#: characters, raises ``UnicodeError``).
HTTP_FAILURES: tuple[type[Exception], ...] = (httpx.HTTPError, httpx.InvalidURL, UnicodeError)


def unusable(label: str, exc: Exception, idempotent: bool) -> UpscaylError | None:
    """The error to raise at once for a failure of :data:`HTTP_FAILURES`
    that asking again cannot cure, or None for a transport failure (retried
    as before).

    A body that does not decode, redirects without end, a link that is no
    URL or names no ``http(s)`` scheme: every try meets the same, and
    httpx's own exceptions used to escape every ``except UpscaylError``.
    start-task's answer that does not decode came after the server read the
    request: the task may exist, so that is :class:`StartUncertainError`."""
    if isinstance(exc, httpx.TransportError) and not isinstance(exc, httpx.UnsupportedProtocol):
        return None
    if not idempotent and isinstance(exc, httpx.DecodingError):
        return StartUncertainError(
            f"{label}: its answer could not be read ({exc}); the task may have been "
            "queued: look at get-upscayl-history before sending it again"
        )
    return BadResponseError(f"{label}: {type(exc).__name__}: {exc}")


class DeadlinePassed(Exception):  # noqa: N818 (a signal between our modules, not an error)
    """A caller's deadline (``wait(timeout=...)``, ``upscale(timeout=...)``)
    came before an answer: raised instead of sleeping past it to retry.
    Callers turn it into their own outcome (:class:`WaitTimeoutError`, a task
    still running)."""


#: The least time a request sent at (or just after) a deadline is given: the
#: last poll at a deadline must still be answerable, or a task finished just
#: then would be reported as timed out unasked.
FINAL_REQUEST_SECONDS = 2.0


class Deadlines:
    """A client's deadline for the requests made within :meth:`bounded`.

    Held in a ``ContextVar``, so it is per thread and per asyncio task: the
    part uploads of other threads, and other coroutines, are not bounded by
    it. A context rather than a parameter, so that ``wait()`` and
    ``upscale()`` still go through the public ``get_task_status`` and
    ``get_history`` (which a subclass may override)."""

    def __init__(self) -> None:
        self._var: ContextVar[float | None] = ContextVar("upscayl_deadline", default=None)

    def current(self) -> float | None:
        """The deadline (monotonic) of the requests made now, or None."""
        return self._var.get()

    @contextmanager
    def bounded(self, deadline: float | None) -> Iterator[None]:
        """Within it, requests and their retries end by ``deadline``
        (monotonic; None: unbounded): see ``Client._attempts``."""
        token = self._var.set(deadline)
        try:
            yield
        finally:
            self._var.reset(token)


def beyond(deadline: float | None, delay: float = 0.0) -> bool:
    """Whether waiting ``delay`` seconds from now ends past ``deadline``."""
    return deadline is not None and time.monotonic() + delay > deadline


def request_timeout(default: httpx.Timeout, deadline: float | None) -> httpx.Timeout:
    """``default`` with each phase cut to the time left before ``deadline``
    (but no less than :data:`FINAL_REQUEST_SECONDS`): a status read under a
    deadline waited out a 60 s read timeout, whatever the deadline."""
    if deadline is None:
        return default
    left = max(FINAL_REQUEST_SECONDS, deadline - time.monotonic())

    def cut(phase: float | None) -> float:
        return left if phase is None else min(phase, left)

    return httpx.Timeout(
        connect=cut(default.connect),
        read=cut(default.read),
        write=cut(default.write),
        pool=cut(default.pool),
    )


def transport_delay(
    policy: RetryPolicy, attempt: int, idempotent: bool, exc: Exception
) -> float | None:
    """A request that never fully left may always be repeated; one that may have
    been read by the server only when repeating it is harmless."""
    if isinstance(exc, NOT_SENT) or idempotent:
        return policy.backoff(attempt)
    return None


def status_delay(
    policy: RetryPolicy, attempt: int, idempotent: bool, response: httpx.Response
) -> float | None:
    """A 429 was refused before any work (rate limits are checked first), so
    every call waits it out; other statuses follow :func:`retryable_status`,
    no sooner than a ``Retry-After`` they carry (a 503's says when the server
    expects to be back: backoff alone spent every attempt within 4 s of a
    ``Retry-After: 5``), unless that is longer than ``max_retry_after``."""
    if response.status_code == 429:
        return policy.rate_limit_wait(retry_after_of(response), attempt)
    if retryable_status(response.status_code, idempotent):
        asked = retry_after_of(response)
        if asked is not None and asked > policy.max_retry_after:
            return None
        return max(policy.backoff(attempt), asked or 0.0)
    return None


def ambiguous(exc: Exception | None, response: httpx.Response | None) -> bool:
    """Whether a failed attempt may nevertheless have been carried out."""
    if exc is not None:
        return not isinstance(exc, NOT_SENT)
    return response is not None and response.status_code in (500, 502, 504)


@dataclass(frozen=True)
class RetryEvent:
    """Passed to ``on_retry`` hooks: what failed, and how long we wait before again."""

    path: str
    attempt: int
    delay: float
    status_code: int | None
    reason: str
