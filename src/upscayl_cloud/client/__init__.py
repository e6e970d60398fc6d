"""Python client of the Upscayl Cloud API (this server, or any that follows the spec).

>>> from upscayl_cloud.client import upscale
>>> report = upscale(["photos/"], recursive=True, model="quick-clear-4x", out_dir="big/")

Low level: :class:`Client` / :class:`AsyncClient`, one method per operation.
Base URL and key come from arguments or ``UPSCAYL_URL`` / ``UPSCAYL_API_KEY``.
See ``docs/client.md``.
"""

from upscayl_cloud.client._core import FORMATS, MODELS, SCALES, RetryEvent, RetryPolicy
from upscayl_cloud.client.aio import AsyncClient
from upscayl_cloud.client.batch import FileResult, UpscaleReport, upscale
from upscayl_cloud.client.errors import (
    ApiError,
    BadResponseError,
    CompletionLimitedError,
    ConnectionFailedError,
    RateLimitedError,
    StartUncertainError,
    TaskFailedError,
    UnwritableOutputError,
    UploadCancelledError,
    UpscaleInterrupted,
    UpscaylError,
    WaitTimeoutError,
)
from upscayl_cloud.client.naming import result_file_name, safe_file_name
from upscayl_cloud.client.polling import PollSchedule
from upscayl_cloud.client.sync import Client
from upscayl_cloud.client.types import HistoryPage, ProcessedFile, TaskStatus, UploadLink
from upscayl_cloud.client.uploads import upload_file

__all__ = [
    "FORMATS",
    "MODELS",
    "SCALES",
    "ApiError",
    "AsyncClient",
    "BadResponseError",
    "Client",
    "CompletionLimitedError",
    "ConnectionFailedError",
    "FileResult",
    "HistoryPage",
    "PollSchedule",
    "ProcessedFile",
    "RateLimitedError",
    "RetryEvent",
    "RetryPolicy",
    "StartUncertainError",
    "TaskFailedError",
    "TaskStatus",
    "UnwritableOutputError",
    "UploadCancelledError",
    "UploadLink",
    "UpscaleInterrupted",
    "UpscaleReport",
    "UpscaylError",
    "WaitTimeoutError",
    "result_file_name",
    "safe_file_name",
    "upload_file",
    "upscale",
]
