"""Domain errors, each with the spec's error code and the HTTP status it means.

Services raise these and never import FastAPI; one handler in ``api/errors.py``
renders them as ``{"error": code, "message": public_message}``.
"""

from __future__ import annotations

#: How much of a caller's own input a message repeats: enough to recognise it.
ECHO_LIMIT = 100


def clip(text: str, limit: int = ECHO_LIMIT) -> str:
    """``text`` cut to ``limit`` characters (plus "…"): a message names the
    caller's input, it does not send 5000 characters of it back."""
    return text if len(text) <= limit else text[:limit] + "…"


class ServiceError(Exception):
    code = "INTERNAL_SERVER_ERROR"
    status_code = 500
    public_message = "An unexpected error occurred"
    #: Log it with a traceback (our fault) rather than as a client mistake.
    report = False

    def __init__(self, public_message: str | None = None) -> None:
        if public_message is not None:
            self.public_message = public_message
        super().__init__(self.public_message)

    def response_headers(self) -> dict[str, str]:
        """Headers the answer carries beyond the rate headers."""
        return {}


class BadRequestError(ServiceError):
    code = "BAD_REQUEST"
    status_code = 400
    public_message = "Invalid request parameters provided"


class InvalidFileTypeError(BadRequestError):
    code = "INVALID_FILE_TYPE"
    public_message = "Unsupported file type. Allowed: JPEG, PNG, WEBP"


class FileSizeExceededError(BadRequestError):
    code = "FILE_SIZE_EXCEEDED"
    public_message = "File size exceeds maximum limit of 100MB"

    @classmethod
    def over(cls, limit_bytes: int, label: str | None = None) -> FileSizeExceededError:
        """The refusal naming this server's limit (``UPSCAYL_MAX_UPLOAD_BYTES``),
        in the spec's words where it is the default 100MB."""
        limit = f"{limit_bytes // 2**20}MB" if limit_bytes % 2**20 == 0 else f"{limit_bytes} bytes"
        if label:
            return cls(f"{label}: file size exceeds maximum limit of {limit}")
        return cls(f"File size exceeds maximum limit of {limit}")


class MissingFieldsError(BadRequestError):
    code = "MISSING_REQUIRED_FIELDS"
    public_message = "Required fields missing"


class FaceEnhancementUnavailableError(BadRequestError):
    """``enhanceFace`` asked of a server without a face-restoration model:
    refused, never silently ignored."""

    code = "FACE_ENHANCEMENT_UNAVAILABLE"


class UnauthorizedError(ServiceError):
    code = "UNAUTHORIZED"
    status_code = 401
    public_message = "Invalid or missing API key"


class InsufficientCreditsError(ServiceError):
    code = "INSUFFICIENT_CREDITS"
    status_code = 402
    public_message = "Not enough credits to process request"


class ForbiddenError(ServiceError):
    """A signed link that is not ours, was altered, or (uploads) has expired."""

    code = "FORBIDDEN"
    status_code = 403
    public_message = "The link is invalid or has expired"


class NotFoundError(ServiceError):
    code = "NOT_FOUND"
    status_code = 404
    public_message = "Requested resource could not be found"


class GoneError(ServiceError):
    """A download link past its expiry: the object is (or will soon be) deleted."""

    code = "GONE"
    status_code = 410
    public_message = "The link has expired and the file is no longer available"


class RateLimitExceededError(ServiceError):
    code = "RATE_LIMIT_EXCEEDED"
    status_code = 429
    public_message = "Too many requests. Try again later"

    def __init__(self, public_message: str, retry_after_seconds: int) -> None:
        super().__init__(public_message)
        self.retry_after_seconds = retry_after_seconds

    def response_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_seconds)}


class RangeNotSatisfiableError(ServiceError):
    """A download's ``Range`` starts at or past the file's end, as S3's
    ``InvalidRange``; ``Content-Range`` gives the size (RFC 9110)."""

    code = "RANGE_NOT_SATISFIABLE"
    status_code = 416

    def __init__(self, size: int) -> None:
        super().__init__(
            f"The file has {size} bytes and the Range asked for starts at or past its end: "
            "ask for bytes within it, or send no Range for the whole file"
        )
        self.size = size

    def response_headers(self) -> dict[str, str]:
        return {"Content-Range": f"bytes */{self.size}"}


class InternalError(ServiceError):
    report = True
