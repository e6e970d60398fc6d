# ruff: noqa: N815  (field names are the spec's camelCase JSON names)
"""Request and response bodies, field for field from the spec.

Request fields are strict (no "5" for 5, no "true" for true): the spec says
integer and boolean, and accepting other types would hide client bugs. Every
JSON body is accepted both at the top level (as the spec describes) and
wrapped in ``{"data": {...}}`` (as Upscayl's published examples send it).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)
from pydantic_core import PydanticCustomError

from upscayl_cloud.services.tasks import MODEL_NAMES

FileType = Literal["image/jpeg", "image/png", "image/webp"]
#: The spec's model enum, from the one list the engine and services share.
ModelName = Literal[MODEL_NAMES]  # type: ignore[valid-type]
TaskState = Literal["pending", "processing", "completed", "failed"]
OutputFormat = Literal["png", "jpg", "webp"]
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


def unstorable(value: str) -> str | None:
    """Why ``value`` cannot be stored as text, or None when it can.

    JSON may escape a lone UTF-16 surrogate (``"\\ud800"``), which no
    database, file name or header can hold, and a NUL (``"\\u0000"``), which
    PostgreSQL's text columns refuse (SQLite takes it): both are refused as
    bad input where they arrive, rather than failing later as a server
    error on one database only."""
    if "\x00" in value:
        return "must not contain NUL characters (\\u0000)"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text (it holds a lone surrogate)"
    return None


def _encodable(value: str) -> str:
    if (reason := unstorable(value)) is not None:
        raise PydanticCustomError("unstorable_text", reason)  # no "Value error, " before it
    return value


#: A request string: strict, and encodable as UTF-8.
Text = Annotated[StrictStr, AfterValidator(_encodable)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _unwrap_data(cls, value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"data"} and isinstance(value["data"], dict):
            return value["data"]
        return value


# -- requests -------------------------------------------------------------------
class UploadUrlCreate(_Body):
    originalFileName: Text = Field(min_length=1, max_length=255)
    fileType: FileType
    #: No upper bound here: the spec's 100 MB is UPSCAYL_MAX_UPLOAD_BYTES's
    #: default, and the service checks the configured one (check_declared).
    fileSize: StrictInt = Field(ge=1)
    #: Extension (docs/api.md): ask for (true) or refuse (false) multipart URLs;
    #: unset, files from ``multipart_threshold_bytes`` up get them.
    multipart: StrictBool | None = None


class TaskStatusQuery(_Body):
    #: Any case: the service compares the canonical form (``status.canonical_task_id``).
    taskId: Text = Field(pattern=UUID_PATTERN, json_schema_extra={"format": "uuid"})


class HistoryQuery(_Body):
    timestampOffset: StrictInt | None = Field(default=None, ge=INT64_MIN, le=INT64_MAX)
    batch: StrictBool | None = None
    failed: StrictBool | None = None
    limit: StrictInt = Field(default=20, ge=1, le=100)
    processed: TaskState | None = None


class CompletedPartIn(BaseModel):
    """The spec's S3 casing; get-upload-url's own ``parts`` list is camelCase
    (``partNumber``), so a client that hands back what it was given, with
    the ``etag`` it read, is understood too."""

    PartNumber: StrictInt = Field(
        ge=1, le=10_000, validation_alias=AliasChoices("PartNumber", "partNumber")
    )
    ETag: Text = Field(validation_alias=AliasChoices("ETag", "etag"))


class MultipartCompletion(BaseModel):
    uploadId: Text
    key: Text
    parts: list[CompletedPartIn] = Field(min_length=1)


class MultipartCompletionCreate(BaseModel):
    """The spec wraps this body in ``data``; the bare form is accepted too."""

    model_config = ConfigDict(extra="ignore")
    data: MultipartCompletion

    @model_validator(mode="before")
    @classmethod
    def _wrap(cls, value: Any) -> Any:
        # Any object without ``data`` is read as the bare form, so a body
        # missing fields (even ``{}``) is told which: ``data.uploadId``...
        if isinstance(value, dict) and "data" not in value:
            return {"data": value}
        return value


# -- responses ------------------------------------------------------------------
class ErrorBody(BaseModel):
    error: str
    message: str


class PartUrl(BaseModel):
    partNumber: int
    uploadURL: str


class UploadUrlData(BaseModel):
    uploadURL: str
    fileName: str
    fileType: str | None = None
    fileSize: int | None = None
    originalFileName: str | None = None
    createdAt: int | None = None
    expiresAt: int
    uploadId: str | None = None
    key: str | None = None
    partSize: int | None = None
    parts: list[PartUrl] | None = None


class UploadUrlPublic(BaseModel):
    status: Literal["success"] = "success"
    data: UploadUrlData


class Dimensions(BaseModel):
    width: int = Field(ge=1)
    height: int = Field(ge=1)


class ProcessedFile(BaseModel):
    fileName: str | None = None
    fileType: str | None = None
    path: str | None = None
    createdAt: int | None = None
    expiresAt: int | None = None
    originalFileName: str | None = None
    fileSize: int | None = None
    downloadLink: str | None = None
    thumbnailLink: str | None = None
    finalFileSize: int | None = None
    processedFileName: str | None = None
    dimensions: Dimensions | None = None


class TaskData(BaseModel):
    taskId: str | None = None
    createdAt: int | None = None
    batchMode: bool | None = None
    enhanceFace: bool | None = None
    error: str | None = None
    files: list[ProcessedFile] | None = None
    model: ModelName | None = None
    progress: str | None = None
    scale: str | None = None
    status: TaskState | None = None
    saveImageAs: OutputFormat | None = None
    creditsDeducted: bool | None = None
    deductedCredits: int | None = None


class TaskStatusPublic(BaseModel):
    status: Literal["success"] = "success"
    data: TaskData


class Pagination(BaseModel):
    total: int
    hasMore: bool
    nextOffset: int | None = None


class HistoryPublic(BaseModel):
    status: Literal["success"] = "success"
    pagination: Pagination
    data: list[TaskData]


class TaskStarted(BaseModel):
    taskId: str = Field(json_schema_extra={"format": "uuid"})
    message: str


class TaskStartedPublic(BaseModel):
    status: Literal["success"] = "success"
    data: TaskStarted


class MultipartDone(BaseModel):
    status: Literal["success"] = "success"


class MultipartDonePublic(BaseModel):
    status: Literal["success"] = "success"
    data: MultipartDone
