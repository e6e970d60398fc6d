"""One error shape for every failure: ``{"error": CODE, "message": ...}``.

Covers our domain errors, FastAPI's validation errors (mapped to the spec's
codes: a missing field is MISSING_REQUIRED_FIELDS, a bad ``fileType``
INVALID_FILE_TYPE, an oversized ``fileSize`` FILE_SIZE_EXCEEDED, anything else
BAD_REQUEST), Starlette's 404/405 for unknown routes, and unexpected
exceptions (500, details only in the log). A database that cannot be reached
(down, restarting) is no bug: 503 ``SERVICE_UNAVAILABLE`` with ``Retry-After``.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from upscayl_cloud.db.engine import database_unavailable
from upscayl_cloud.services.errors import RateLimitExceededError, ServiceError

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


def _field(error: dict[str, Any]) -> str:
    parts = [str(p) for p in error.get("loc", ()) if p not in ("body", "data")]
    return ".".join(parts) or "body"


def validation_error_body(errors: list[dict[str, Any]]) -> tuple[str, str]:
    """The spec's code and a message naming every field at fault."""
    missing = [_field(e) for e in errors if e.get("type") == "missing"]
    if missing:
        return "MISSING_REQUIRED_FIELDS", "Required fields missing: " + ", ".join(missing)
    for error in errors:
        field = _field(error)
        if field.endswith("fileType"):
            return "INVALID_FILE_TYPE", "Unsupported file type. Allowed: JPEG, PNG, WEBP"
        if field.endswith("fileSize") and error.get("type") == "less_than_equal":
            return "FILE_SIZE_EXCEEDED", "File size exceeds maximum limit of 100MB"
    details = "; ".join(f"{_field(e)}: {e.get('msg', 'invalid')}" for e in errors[:5])
    return "BAD_REQUEST", f"Invalid request parameters: {details}"


def _rate_headers(request: Request) -> dict[str, str]:
    return dict(getattr(request.state, "rate_headers", {}) or {})


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    if exc.report:
        log.error("%s %s: %s", request.method, request.url.path, exc, exc_info=exc)
    headers = _rate_headers(request)
    if isinstance(exc, RateLimitExceededError):
        headers["Retry-After"] = str(exc.retry_after_seconds)
    return error_response(exc.status_code, exc.code, exc.public_message, headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    code, message = validation_error_body(list(exc.errors()))
    return error_response(400, code, message, _rate_headers(request))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "INTERNAL_SERVER_ERROR")
    message = exc.detail if isinstance(exc.detail, str) else code
    if exc.status_code == 404:
        message = "Requested resource could not be found"
    return error_response(exc.status_code, code, message, dict(exc.headers or {}))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    if database_unavailable(exc):
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        return error_response(
            503,
            "SERVICE_UNAVAILABLE",
            "The service is temporarily unavailable; retry shortly",
            {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)},
        )
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "INTERNAL_SERVER_ERROR", "An unexpected error occurred")


def install(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
