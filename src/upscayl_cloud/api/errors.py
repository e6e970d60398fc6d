"""One error shape for every failure: ``{"error": CODE, "message": ...}``.

Covers our domain errors, FastAPI's validation errors (mapped to the spec's
codes: a missing field is MISSING_REQUIRED_FIELDS, a bad ``fileType``
INVALID_FILE_TYPE, an oversized ``fileSize`` FILE_SIZE_EXCEEDED, anything else
BAD_REQUEST; a body that is no JSON object is told so, not reported as a
field), Starlette's 404/405 for unknown routes, and unexpected
exceptions (500, details only in the log). A database that cannot be reached
(down, restarting) is no bug: 503 ``SERVICE_UNAVAILABLE`` with ``Retry-After``;
nor is an object store that cannot be reached, times out or answers 5xx
(``StorageUnavailableError``): the same 503, one warning line, no traceback;
nor is a full disk (``ENOSPC``, ``EDQUOT``: the local store, the spool of a
signed PUT, SQLite's own "disk is full" is the database's): the same 503.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match
from starlette.types import Receive, Scope, Send

from upscayl_cloud.api.asgi import HttpLayer, TrackedSend
from upscayl_cloud.api.deps import count_unread
from upscayl_cloud.db.engine import database_unavailable
from upscayl_cloud.diskspace import out_of_space
from upscayl_cloud.services.errors import (
    ECHO_LIMIT,
    ServiceError,
    clip,
)
from upscayl_cloud.storage.base import StorageUnavailableError

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "FILE_SIZE_EXCEEDED",
    415: "BAD_REQUEST",
    429: "RATE_LIMIT_EXCEEDED",
}
#: Seconds a client is told to wait while the database is unreachable.
UNAVAILABLE_RETRY_AFTER_SECONDS = 5


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


JSON_OBJECT_HINT = "send a JSON object with Content-Type: application/json"


def _field(error: dict[str, Any]) -> str:
    # ``body`` is FastAPI's prefix, not a field the caller sent. ``data`` is
    # a field only in complete-multipart-upload (the other bodies unwrap it
    # before validation), where the spec names its members ``data.uploadId``.
    parts = [str(p) for p in error.get("loc", ()) if p != "body"]
    return ".".join(parts) or "body"


def _message(error: dict[str, Any]) -> str:
    """Pydantic's message, except where it shows a regular expression instead
    of saying what is expected."""
    if error.get("type") == "string_pattern_mismatch" and _field(error).endswith("taskId"):
        return "must be a UUID, e.g. 30a89e69-c702-4247-9905-f0a53dfa45ab"
    return str(error.get("msg", "invalid"))


def _body_problem(errors: list[dict[str, Any]], media_type: str) -> str | None:
    """What is wrong with the body as a whole, or None when only fields are."""
    for error in errors:
        kind, loc = error.get("type"), tuple(error.get("loc", ()))
        if kind == "json_invalid":
            where = f" (at character {loc[1]})" if len(loc) > 1 else ""
            reason = str((error.get("ctx") or {}).get("error", "")).strip()
            detail = f": {reason}{where}" if reason else where
            return f"The request body is not valid JSON{detail}; {JSON_OBJECT_HINT}"
        if loc != ("body",):
            continue
        if kind == "missing":
            return f"Required fields missing: body ({JSON_OBJECT_HINT})"
        if media_type != "application/json":
            sent = media_type or "no Content-Type"
            return f"The request body was sent as {clip(sent)}; {JSON_OBJECT_HINT}"
        return f"The request body must be a JSON object, not another JSON value; {JSON_OBJECT_HINT}"
    return None


def validation_error_body(
    errors: list[dict[str, Any]], media_type: str = "application/json"
) -> tuple[str, str]:
    """The spec's code and a message naming every field at fault.

    ``media_type`` is the request's Content-Type (without parameters): a JSON
    body sent as text/plain or as a form fails as "not an object", and the
    fix is the header, so the message says that.
    """
    problem = _body_problem(errors, media_type)
    if problem is not None:
        missing_body = any(e.get("type") == "missing" for e in errors)
        return ("MISSING_REQUIRED_FIELDS" if missing_body else "BAD_REQUEST"), problem
    missing = [_field(e) for e in errors if e.get("type") == "missing"]
    if missing:
        return "MISSING_REQUIRED_FIELDS", "Required fields missing: " + ", ".join(missing)
    for error in errors:
        field = _field(error)
        if field.endswith("fileType"):
            return "INVALID_FILE_TYPE", "Unsupported file type. Allowed: JPEG, PNG, WEBP"
    details = "; ".join(clip(f"{_field(e)}: {_message(e)}", 2 * ECHO_LIMIT) for e in errors[:5])
    return "BAD_REQUEST", f"Invalid request parameters: {details}"


#: FastAPI's whole answer to a JSON body its parser gave up on.
_FASTAPI_PARSE_ERROR = "There was an error parsing the body"


def number_too_long(exc: BaseException) -> bool:
    """Python's refusal to read an integer of more digits than
    ``sys.get_int_max_str_digits()`` (4300 by default): a plain ValueError,
    not the JSON decoder's own error, so it says nothing of JSON."""
    return isinstance(exc, ValueError) and "integer string conversion" in str(exc)


def _unparsable_body(cause: BaseException | None) -> str | None:
    """What FastAPI's "There was an error parsing the body" was, when the
    reason is one the caller can fix (it hides the parser's exception)."""
    if isinstance(cause, RecursionError):
        return f"The request body is nested too deeply to parse; {JSON_OBJECT_HINT}"
    if isinstance(cause, UnicodeDecodeError):
        return (
            f"The request body is not valid UTF-8 (byte {cause.start}); {JSON_OBJECT_HINT} in UTF-8"
        )
    if cause is not None and number_too_long(cause):
        return (
            "The request body holds a number too long to parse (more than "
            f"{sys.get_int_max_str_digits()} digits); no field takes a number that long"
        )
    return None


def rate_headers(request: Request) -> dict[str, str]:
    return dict(getattr(request.state, "rate_headers", {}) or {})


async def service_error_response(request: Request, exc: Exception) -> JSONResponse:
    """A domain error's answer, with the rate headers of a counted request."""
    assert isinstance(exc, ServiceError)
    if exc.report:
        log.error("%s %s: %s", request.method, request.url.path, exc, exc_info=exc)
    headers = {**rate_headers(request), **exc.response_headers()}
    return error_response(exc.status_code, exc.code, exc.public_message, headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    if (instead := await count_unread(request)) is not None:
        return await service_error_response(request, instead)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    code, message = validation_error_body(list(exc.errors()), media_type)
    return error_response(400, code, message, rate_headers(request))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "INTERNAL_SERVER_ERROR")
    message = exc.detail if isinstance(exc.detail, str) else code
    if exc.status_code == 400 and message == _FASTAPI_PARSE_ERROR:
        if (instead := await count_unread(request)) is not None:
            return await service_error_response(request, instead)
        message = _unparsable_body(exc.__cause__) or message
    if exc.status_code == 404:
        message = _not_found_message(request)
    headers = {**rate_headers(request), **(exc.headers or {})}
    if exc.status_code == 405 and headers.get("Allow"):  # Starlette's bare 405
        allowed = _allowed_methods(request) or headers["Allow"].split(", ")
        headers["Allow"] = ", ".join(allowed)
        method, path = clip(request.method), clip(request.url.path)
        choice = allowed[0] if len(allowed) == 1 else f"one of {', '.join(allowed)}"
        message = f"{method} is not allowed on {path}; use {choice}"
    return error_response(exc.status_code, code, message, headers)


def _not_found_message(request: Request) -> str:
    """Names the route a trailing slash missed. Starlette would have answered
    such a path with a bare 307 to the path without it, which a client that
    does not follow redirects (httpx, by default) takes for a failure it
    cannot read; the app turns that off (``redirect_slashes=False``) and says
    what to fix here instead."""
    path = request.scope["path"]
    stripped = path.rstrip("/")
    if stripped and stripped != path and _allowed_methods(request, stripped):
        return f"Nothing is at {clip(path)}; did you mean {clip(stripped)} (no trailing slash)?"
    return "Requested resource could not be found"


#: The methods a 405's ``Allow`` may list.
_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request, path: str | None = None) -> list[str]:
    """Every method some route takes on this path: Starlette's 405 names
    only the first route's (a local-store link takes PUT from one route,
    GET and HEAD from another), though ``Allow`` is to list them all. Asked
    of the routes as a request of each method, so routers included within
    routers answer for themselves."""

    def taken(method: str) -> bool:
        scope = {**request.scope, "method": method}
        if path is not None:
            scope["path"] = path
        return any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes)

    return [method for method in _METHODS if taken(method)]


def _unavailable(
    request: Request, message: str = "The service is temporarily unavailable; retry shortly"
) -> JSONResponse:
    """503 with Retry-After: the project's client retries it (not a 500)."""
    headers = rate_headers(request)
    headers["Retry-After"] = str(UNAVAILABLE_RETRY_AFTER_SECONDS)
    return error_response(503, "SERVICE_UNAVAILABLE", message, headers)


async def _storage_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """Registered for its own class, not under ``Exception``: Starlette re-raises
    what reaches the catch-all, and uvicorn would log a second traceback."""
    log.warning("object store unavailable on %s %s: %s", request.method, request.url.path, exc)
    return _unavailable(request)


async def _client_gone(request: Request, exc: Exception) -> JSONResponse:
    """The client hung up (or went silent, see protocol.py) before its body
    was in: nothing was stored, nobody reads this answer, and it is no error
    of ours to log with a traceback."""
    log.info("client disconnected during %s %s", request.method, request.url.path)
    return error_response(400, "BAD_REQUEST", "The request body was cut off; nothing was stored")


async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    """The answer to an exception no handler took (logged here); public for
    the CORS layer, which must answer it with its headers (api/cors.py)."""
    return await _unexpected(request, exc)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # A full disk (or quota): nothing was kept (writes go to a temporary
    # file first): 503, retry once space is freed.
    if out_of_space(exc):
        log.warning("out of disk space on %s %s: %s", request.method, request.url.path, exc)
        return _unavailable(
            request, "The server is out of storage space right now; nothing was stored. Retry later"
        )
    if database_unavailable(exc):
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        return _unavailable(request)
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "INTERNAL_SERVER_ERROR", "An unexpected error occurred")


class AnswerUnexpected(HttpLayer):
    """Answers an exception no handler took, inside Starlette's own last
    resort. Starlette answers it too (with the handler registered for
    ``Exception``), but then re-raises it for the server to log, so every
    500 was logged twice: our line with its traceback, then uvicorn's
    "Exception in ASGI application" with the same traceback again."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracked = TrackedSend(send)
        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if tracked.started:  # too late for an answer: the server closes the connection
                raise
            response = await unexpected(Request(scope), exc)
            await response(scope, receive, send)


def install(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, service_error_response)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(StorageUnavailableError, _storage_unavailable)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected)
