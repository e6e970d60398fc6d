"""Building boto3 S3 clients and reading their errors, for ``s3.py``.

Kept apart so that ``s3.py`` is only the ``ObjectStorage`` translation. The
client is built once by the composition root (API lifespan, worker) and is
thread-safe, so every request and worker thread shares it.
"""

from __future__ import annotations

import logging
import re

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as StoreConnectionError

from upscayl_cloud.storage.base import ObjectMissingError, StorageError, StorageUnavailableError

#: Error codes that mean "no such object" (HEAD answers a bare 404).
MISSING = frozenset({"404", "NoSuchKey", "NotFound"})
#: Codes a store answers when it cannot serve now (besides any HTTP 5xx).
UNAVAILABLE_CODES = frozenset({"ServiceUnavailable", "SlowDown", "InternalError", "RequestTimeout"})
#: botocore's failures to reach the store (refused, connect timeout) or to
#: hear back from it (read timeout, connection closed mid-answer).
_UNREACHABLE = (StoreConnectionError, HTTPClientError)
_SIGNATURE = re.compile(r"(X-Amz-(?:Signature|Credential|Security-Token)=)[^&]+", re.IGNORECASE)


def redact_url(url: str) -> str:
    """The URL without its signature and credential, safe for a log line."""
    return _SIGNATURE.sub(r"\1[redacted]", url)


class _HideSignatures(logging.Filter):
    """botocore.auth logs every signature it computes at DEBUG, presigned
    links' included; such a signature is a credential until the link expires."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("Signature"):
            record.msg, record.args = "Signature: [redacted]", ()
        return True


def hide_signatures() -> None:
    """Install the filter once (idempotent); called wherever clients are built."""
    auth_log = logging.getLogger("botocore.auth")
    if not any(isinstance(f, _HideSignatures) for f in auth_log.filters):
        auth_log.addFilter(_HideSignatures())


def make_client(
    endpoint_url: str | None,
    region: str,
    access_key_id: str | None,
    secret_access_key: str | None,
    addressing_style: str = "path",
    *,
    connect_timeout: float = 5.0,
    read_timeout: float = 60.0,
    max_attempts: int = 3,
) -> BaseClient:
    """A thread-safe S3 client, built once by the composition root.

    Also keeps botocore's DEBUG log from printing signatures. Checksums only
    "when required": boto3 >= 1.36 otherwise adds CRC32 checksums that some
    S3-compatible stores (older releases especially) refuse. Path-style
    addressing suits SeaweedFS and MinIO; AWS prefers ``virtual``.

    Timeouts and tries are bounded: botocore's defaults (60 s per try, and
    we used to allow 5 tries) held a request for 6 minutes on a frozen store
    and let probes use up the API's threads. The read timeout is per read,
    so it must only cover the store's pause before answering a large upload.
    ``max_attempts`` counts every try (botocore's ``total_max_attempts``; its
    ``max_attempts`` would count retries only).
    """
    hide_signatures()
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": addressing_style},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"total_max_attempts": max_attempts, "mode": "standard"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url or None,
        region_name=region,
        aws_access_key_id=access_key_id or None,
        aws_secret_access_key=secret_access_key or None,
        config=config,
    )


def error_code(exc: ClientError) -> str:
    """S3's error code (``NoSuchKey``, ``InvalidPart``...): what the code branches on."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def unavailable(exc: ClientError | BotoCoreError) -> bool:
    """Whether the failure says "the store cannot serve now" rather than "no"."""
    if isinstance(exc, BotoCoreError):
        return isinstance(exc, _UNREACHABLE)
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return status >= 500 or error_code(exc) in UNAVAILABLE_CODES


def translate(key: str, exc: ClientError | BotoCoreError) -> StorageError:
    """Store failures as StorageError; a missing key as ObjectMissingError; an
    unreachable, timed-out or 5xx store as StorageUnavailableError."""
    if unavailable(exc):
        return StorageUnavailableError(f"{key}: store unavailable: {exc}")
    if isinstance(exc, BotoCoreError):
        return StorageError(f"{key}: {exc}")
    if error_code(exc) in MISSING:
        return ObjectMissingError(key)
    return StorageError(f"{key}: S3 error {error_code(exc) or exc}")
