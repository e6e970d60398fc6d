"""The spec's response objects as ``TypedDict``s, for editors and type checkers.

At run time they are the plain dicts the server sent (nothing is converted or
dropped, so fields a server adds, like ours ``taskId`` and ``createdAt``, are
still there); the types only name what the spec promises.
"""

from __future__ import annotations

from typing import TypedDict


class Dimensions(TypedDict, total=False):
    width: int
    height: int


class ProcessedFile(TypedDict, total=False):
    fileName: str
    fileType: str
    path: str
    createdAt: int
    expiresAt: int
    originalFileName: str
    fileSize: int
    downloadLink: str
    thumbnailLink: str
    finalFileSize: int
    processedFileName: str
    dimensions: Dimensions


class TaskStatus(TypedDict, total=False):
    """``data`` of get-task-status, and one item of get-upscayl-history."""

    taskId: str
    createdAt: int
    batchMode: bool
    enhanceFace: bool
    error: str
    files: list[ProcessedFile]
    model: str
    progress: str
    scale: str
    status: str
    saveImageAs: str
    creditsDeducted: bool
    deductedCredits: float


class UploadPart(TypedDict):
    partNumber: int
    uploadURL: str


class UploadLink(TypedDict, total=False):
    """``data`` of get-upload-url (the last four only for a multipart upload)."""

    uploadURL: str
    fileName: str
    fileType: str
    fileSize: int
    originalFileName: str
    createdAt: int
    expiresAt: int
    uploadId: str
    key: str
    partSize: int
    parts: list[UploadPart]


class UploadedFile(TypedDict, total=False):
    """An item of start-task's ``files``: a previous upload."""

    fileName: str
    fileType: str
    fileSize: int


class Pagination(TypedDict, total=False):
    total: int
    hasMore: bool
    nextOffset: int


class HistoryPage(TypedDict, total=False):
    status: str
    data: list[TaskStatus]
    pagination: Pagination
