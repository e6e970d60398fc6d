"""One router per spec tag, plus signed object links and operations endpoints."""

from __future__ import annotations

from typing import Any

from upscayl_cloud.api.schemas import ErrorBody

_DESCRIPTIONS = {
    400: "Invalid request parameters",
    401: "Authentication failed or API key missing",
    402: "Insufficient credits",
    403: "Invalid or expired link",
    404: "Requested resource not found",
    410: "Link expired",
    429: "Rate limit exceeded",
    500: "Internal server error occurred",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses an operation can answer."""
    return {code: {"model": ErrorBody, "description": _DESCRIPTIONS[code]} for code in codes}


def without_validation_422(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` (edited in place) without the 422 FastAPI documents for
    every operation that validates input: this server answers validation
    failures 400 in the spec's error shape, so a client generated from the
    served document would otherwise model an answer that never comes."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
    schemas = document.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return document


def with_upload_limit(document: dict[str, Any], max_upload_bytes: int) -> dict[str, Any]:
    """``document`` (edited in place) with get-upload-url's ``fileSize``
    bounded by this server's limit (UPSCAYL_MAX_UPLOAD_BYTES), as the spec
    bounds it by its 100 MB: the request model itself leaves the bound to
    the service, which applies the configured one."""
    schemas = document.get("components", {}).get("schemas", {})
    size = schemas.get("UploadUrlCreate", {}).get("properties", {}).get("fileSize")
    if size is not None:
        size["maximum"] = max_upload_bytes
    return document
