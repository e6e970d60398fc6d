"""Reading start-task's multipart/form-data: fields, the direct file, ``files``.

``files`` is accepted as one JSON array in one part, or one JSON object per
repeated part (both are seen in the wild), each part plain or a file part
(a browser's ``FormData.append("files", blob)``, ``curl -F files=@e.json``).
The body is counted while it streams in, so an oversized upload is cut off
at the limit rather than spooled to disk whole, and what the form keeps in
memory is bounded while it arrives (``_StartTaskParser``): a request the
client never finishes holds a few MiB at most, not every field it sent.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from python_multipart.multipart import parse_options_header
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.types import Message

from upscayl_cloud.api.errors import number_too_long
from upscayl_cloud.api.schemas import unstorable
from upscayl_cloud.config import Settings
from upscayl_cloud.services.errors import (
    BadRequestError,
    FileSizeExceededError,
    InvalidFileTypeError,
    MissingFieldsError,
    ServiceError,
    clip,
)
from upscayl_cloud.services.imagecheck import sniff
from upscayl_cloud.services.tasks import MODEL_NAMES, TaskOptions

#: Room for the form's other fields and part headers beyond the file itself.
FORM_OVERHEAD_BYTES = 1024 * 1024
#: All ``files`` parts of one request together: 50 entries need a few kB,
#: and parsing is synchronous on the event loop, so a request must not be
#: able to make it build millions of objects (60 parts of ``[{},{},...]``).
_MAX_FILES_JSON_BYTES = 1024 * 1024
_FILES_TOO_LARGE = (
    f"files is too large: at most {_MAX_FILES_JSON_BYTES // 1024} kB of JSON in all; "
    "list each file with its fileName and fileType only"
)
#: Each part but ``file`` and ``files``: an option's value is a word (the
#: longest model name is 19 characters); a part of another name is ignored,
#: but not kept whole.
_MAX_FIELD_BYTES = 1024
#: All part headers together (each is also capped by python-multipart, at
#: 8 headers of 4 KiB): a part needs a hundred bytes or so of them, so the
#: budget is this much plus :data:`_HEADER_BYTES_PER_PART` for each part a
#: form may have (a fixed 64 KiB refused a valid form of ~950 ``files``
#: parts, which ``UPSCAYL_MAX_FILES_PER_TASK`` may allow).
_MAX_HEADER_BYTES = 64 * 1024
_HEADER_BYTES_PER_PART = 512
#: The most of the direct file held in memory before it goes to disk.
_SPOOL_BYTES = 64 * 1024

_ENUM = {"model": list(MODEL_NAMES)}

#: The spec's request body for start-task, served as-is in our OpenAPI document.
START_TASK_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "files": {
                        "type": "array",
                        "description": "Array of previously uploaded files to process",
                        "items": {
                            "type": "object",
                            "required": ["fileName", "fileType", "fileSize"],
                            "properties": {
                                "fileName": {"type": "string"},
                                "fileType": {
                                    "type": "string",
                                    "enum": ["image/jpeg", "image/png", "image/webp"],
                                },
                                "fileSize": {
                                    "type": "integer",
                                    "minimum": 1,
                                    "maximum": 104857600,
                                },
                                "originalFileName": {"type": "string"},
                                "createdAt": {"type": "integer", "format": "int64"},
                                "expiresAt": {"type": "integer", "format": "int64"},
                            },
                        },
                    },
                    "file": {"type": "string", "format": "binary"},
                    "enhanceFace": {"type": "boolean", "default": False},
                    "model": {"type": "string", "enum": _ENUM["model"]},
                    "scale": {"type": "string", "enum": ["2", "4", "8"]},
                    "saveImageAs": {
                        "type": "string",
                        "enum": ["png", "jpg", "webp"],
                        "default": "jpg",
                    },
                },
            }
        }
    },
}


class _CountingReceive:
    """Wraps the ASGI receive callable and stops the body past ``limit`` bytes.

    It also watches for the closing delimiter ``--<boundary>--``: the parser
    accepts a body that simply stops, and reports whatever parts it got, so
    a truncated upload would otherwise read as "field missing".
    """

    def __init__(self, request: Request, settings: Settings, boundary: bytes) -> None:
        self._receive = request.receive
        self._file_limit = settings.max_upload_bytes
        self._limit = settings.max_upload_bytes + FORM_OVERHEAD_BYTES
        self._seen = 0
        self._closing = b"--" + boundary + b"--"
        self._tail = b""
        self.closed = False

    @property
    def empty(self) -> bool:
        """No byte of the body has arrived."""
        return self._seen == 0

    async def __call__(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            body = message.get("body", b"")
            self._seen += len(body)
            if self._seen > self._limit:
                raise FileSizeExceededError.over(self._file_limit)
            if not self.closed and self._closing:
                window = self._tail + body
                self.closed = self._closing in window
                self._tail = window[-(len(self._closing) - 1) :]
        return message


@dataclass
class DirectFile:
    upload: UploadFile
    filename: str
    mime_type: str

    def chunks(self) -> Iterator[bytes]:
        self.upload.file.seek(0)
        return iter(lambda: self.upload.file.read(1 << 20), b"")


@dataclass
class StartTaskForm:
    options: TaskOptions
    files: list[Any] = field(default_factory=list)
    direct: DirectFile | None = None
    _uploads: list[UploadFile] = field(default_factory=list)

    async def close(self) -> None:
        for upload in self._uploads:
            await upload.close()


def _boundary(content_type: str) -> bytes:
    """The multipart boundary named in ``content_type``, or empty."""
    _, params = parse_options_header(content_type)
    value = params.get(b"boundary", b"")
    return value if isinstance(value, bytes) else value.encode("latin-1")


#: Each field of a ``files`` entry and the JSON type it must have.
_ENTRY_TYPES: dict[str, tuple[type, str]] = {
    "fileName": (str, "a string"),
    "fileType": (str, "a string"),
    "fileSize": (int, "an integer"),
    "originalFileName": (str, "a string"),
    "createdAt": (int, "an integer"),
    "expiresAt": (int, "an integer"),
}
_JSON_TYPES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
#: Longer than any fileName the server hands out (the column holds 300).
_MAX_FILE_NAME = 300


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _check_entry_types(entry: Any, index: int) -> None:
    """Refuse a ``files`` entry whose fields have the wrong JSON type.

    A present field of the wrong type is a type error naming the field, not
    a "missing" one; absent fields are left to the task checks. A fileName
    longer than any this server issues is refused here, so no message
    repeats thousands of characters of it.
    """
    if not isinstance(entry, dict):
        return
    for name, (expected, label) in _ENTRY_TYPES.items():
        value = entry.get(name)
        if value is None:
            continue
        if not isinstance(value, expected) or isinstance(value, bool):
            raise BadRequestError(f"files[{index}].{name} must be {label}, not {_json_type(value)}")
        if isinstance(value, str) and (reason := unstorable(value)) is not None:
            raise BadRequestError(f"files[{index}].{name} {reason}")
    file_name = entry.get("fileName")
    if isinstance(file_name, str) and len(file_name) > _MAX_FILE_NAME:
        raise BadRequestError(
            f"files[{index}].fileName {clip(file_name)!r} is {len(file_name)} characters long; "
            "use the fileName get-upload-url returned"
        )


def _text(value: str | UploadFile, name: str) -> str:
    if isinstance(value, UploadFile):
        raise BadRequestError(f"{name} must be a plain form field")
    return value


def _bool(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise BadRequestError(f"{name} must be true or false")


async def _json_part(value: str | UploadFile, budget: int) -> tuple[Any, int]:
    """The part's JSON and the bytes it took from ``budget`` (see _MAX_FILES_JSON_BYTES)."""
    if isinstance(value, UploadFile):
        raw = await value.read(budget + 1)
        size, value = len(raw), raw.decode("utf-8", errors="replace")
    else:
        size = len(value.encode("utf-8", errors="surrogatepass"))
    if size > budget:
        raise BadRequestError(_FILES_TOO_LARGE)
    try:
        return json.loads(value), size
    except ValueError as exc:
        if number_too_long(exc):  # Python's limit on an int's digits, not a JSON error
            raise BadRequestError("files holds a number too long to parse") from exc
        raise BadRequestError("files must be JSON: an array, or one object per part") from exc
    except RecursionError as exc:  # thousands of nested arrays: the parser's stack, not ours
        raise BadRequestError(
            "files must be JSON: an array, or one object per part, not nested this deeply"
        ) from exc


#: The single-valued options of start-task's form, with a value of each.
_OPTIONS = ("model", "scale", "saveImageAs", "enhanceFace")
_EXAMPLES = {
    "model": "upscayl-standard-4x",
    "scale": "4",
    "saveImageAs": "png",
    "enhanceFace": "true",
}


class _StartTaskParser(MultiPartParser):
    """Starlette's multipart parser, bounding what start-task's form keeps
    while the body arrives.

    Starlette keeps every plain field whole in memory (up to 1 MiB each,
    by default) until the body ends, and only then did the checks below
    run: sixty fields of 1 MiB, never finished, held 60 MiB a request. Here
    each part is judged by its name as soon as its headers are in, and its
    bytes are counted as they come: ``files`` (plain or file parts, at most
    ``max_files_per_task``) share the 1 MiB budget of ``files`` JSON, an
    option or a part of another name may hold 1 KiB, and all part headers
    together 64 KiB. A part of another name is ignored, as in JSON bodies:
    the spec's form may grow a field (its commented-out ``compression``),
    and clients send an empty file part to force a multipart body; past
    1 KiB it is a mistake (an image sent as ``image``), refused before the
    rest of it is spooled. ``file``, the direct image, is the one large
    part, and it goes to disk past ``_SPOOL_BYTES``. A refusal names the
    field at fault and says what it takes; the parts already read are
    closed by Starlette."""

    spool_max_size = _SPOOL_BYTES

    def __init__(
        self, headers: Headers, stream: AsyncGenerator[bytes, None], max_files_per_task: int
    ) -> None:
        # Starlette's own counts stay as a backstop: ours refuse first.
        super().__init__(
            headers,
            stream,
            max_files=max_files_per_task + 10,
            max_fields=max_files_per_task + 10,
            max_part_size=_MAX_FILES_JSON_BYTES,
        )
        self._max_files_per_task = max_files_per_task
        self._names: Counter[str] = Counter()
        self._files_left = _MAX_FILES_JSON_BYTES
        self._header_bytes = 0
        self._header_budget = _MAX_HEADER_BYTES + (max_files_per_task + 10) * _HEADER_BYTES_PER_PART
        self._part_bytes = 0

    def _count_header(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self._header_budget:
            raise BadRequestError(
                f"Malformed multipart body: its part headers come to more than "
                f"{self._header_budget // 1024} KiB; a part needs only its Content-Disposition "
                "(and Content-Type)"
            )

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        super().on_header_field(data, start, end)

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        super().on_header_value(data, start, end)

    def on_headers_finished(self) -> None:
        _, params = parse_options_header(self._current_part.content_disposition)
        name = params.get(b"name")
        if isinstance(name, bytes):  # without one, Starlette refuses the part
            self._admit(name.decode("utf-8", errors="replace"), b"filename" in params)
        super().on_headers_finished()

    def _admit(self, name: str, is_file: bool) -> None:
        """Refuse a part that cannot be right, before any of its bytes."""
        self._names[name] += 1
        sent = self._names[name]
        if name == "file":
            if not is_file:
                raise BadRequestError("file must be a file part")
            if sent > 1:
                raise BadRequestError("Send one file per task in 'file'; use 'files' for a batch")
        elif name == "files":
            if sent > self._max_files_per_task:  # each part lists one file at least
                raise BadRequestError(
                    f"At most {self._max_files_per_task} files per task "
                    f"(files was sent in more than {self._max_files_per_task} parts)"
                )
        elif name in _OPTIONS:
            if is_file:
                raise BadRequestError(f"{name} must be a plain form field")
            if sent > 1:  # which one was meant?
                raise BadRequestError(f"{name} was sent {sent} times; send it once")

    def on_part_begin(self) -> None:
        self._part_bytes = 0
        super().on_part_begin()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        name = self._current_part.field_name
        size = end - start
        self._part_bytes += size
        if name == "files":
            self._files_left -= size
            if self._files_left < 0:
                raise BadRequestError(_FILES_TOO_LARGE)
        elif name != "file" and self._part_bytes > _MAX_FIELD_BYTES:
            if name in _OPTIONS:
                raise BadRequestError(
                    f"{name} is longer than {_MAX_FIELD_BYTES} bytes; it takes one short "
                    f"value, e.g. {name}={_EXAMPLES[name]}"
                )
            raise BadRequestError(
                f"start-task takes no field {clip(name)!r} (a part of another name is ignored "
                f"only up to {_MAX_FIELD_BYTES} bytes); send the image as 'file', or the "
                "uploaded files' JSON as 'files'"
            )
        super().on_part_data(data, start, end)


async def parse_start_task(request: Request, settings: Settings) -> StartTaskForm:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "multipart/form-data":
        raise BadRequestError("start-task expects multipart/form-data")
    limit = settings.max_upload_bytes + FORM_OVERHEAD_BYTES
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise FileSizeExceededError.over(settings.max_upload_bytes)
    boundary = _boundary(request.headers.get("content-type", ""))
    if not boundary:
        raise BadRequestError(
            "Malformed multipart body: the Content-Type header has no boundary; "
            "let your HTTP client build the multipart/form-data request (e.g. curl -F)"
        )
    receive = _CountingReceive(request, settings, boundary)
    limited = Request(request.scope, receive=receive)
    try:
        async with aclosing(limited.stream()) as stream:
            parser = _StartTaskParser(limited.headers, stream, settings.max_files_per_task)
            form = await parser.parse()
    except ServiceError:  # too large, or a part refused by name: already in words
        raise
    except MultiPartException as exc:  # Starlette's words for a malformed body
        raise BadRequestError(f"Malformed multipart body: {exc.message}") from exc
    except Exception as exc:  # anything else the parser could not read
        raise BadRequestError("Malformed multipart body: it could not be parsed") from exc
    if not receive.closed:
        for _, value in form.multi_items():
            if isinstance(value, UploadFile):
                await value.close()
        if receive.empty:  # nothing sent at all: the fields are missing, not malformed
            raise MissingFieldsError("Required fields missing: file or files")
        raise BadRequestError(
            "Malformed multipart body: it ends before the closing boundary "
            f"(--{boundary.decode('latin-1')}--); the request was cut off or built incorrectly"
        )
    uploads = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
    result = StartTaskForm(options=TaskOptions(), _uploads=uploads)
    try:
        for name in _OPTIONS:
            if (sent := len(form.getlist(name))) > 1:  # which one was meant?
                raise BadRequestError(f"{name} was sent {sent} times; send it once")
        options = {k: _text(v, k) for k in _OPTIONS if (v := form.get(k)) is not None}
        result.options = TaskOptions(
            model=options.get("model", "upscayl-standard-4x"),
            scale=options.get("scale", "4"),
            save_image_as=options.get("saveImageAs", "jpg"),
            enhance_face=_bool(options["enhanceFace"], "enhanceFace")
            if "enhanceFace" in options
            else False,
        )
        result.options.validate()
        budget = _MAX_FILES_JSON_BYTES
        for part in form.getlist("files"):
            parsed, used = await _json_part(part, budget)
            budget -= used
            result.files.extend(parsed if isinstance(parsed, list) else [parsed])
            if len(result.files) > settings.max_files_per_task:  # before checking each one
                raise BadRequestError(f"At most {settings.max_files_per_task} files per task")
        for index, entry in enumerate(result.files):
            _check_entry_types(entry, index)
        direct = form.getlist("file")
        if len(direct) > 1:
            raise BadRequestError("Send one file per task in 'file'; use 'files' for a batch")
        if direct and result.files:
            raise BadRequestError("Send either 'file' or 'files', not both")
        if direct:
            upload = direct[0]
            if not isinstance(upload, UploadFile):
                raise BadRequestError("file must be a file part")
            head = await upload.read(64)
            label = f"file {clip(upload.filename)!r}" if upload.filename else "file"
            if upload.filename and (reason := unstorable(upload.filename)) is not None:
                raise BadRequestError(f"The file part's filename {reason}")
            if not head:
                raise BadRequestError(f"{label} is empty; send the image's bytes")
            mime = sniff(head)
            if mime is None:
                raise InvalidFileTypeError(f"{label}: not a JPEG, PNG or WebP image")
            result.direct = DirectFile(upload, upload.filename or "", mime)
        elif not result.files:
            raise MissingFieldsError("Required fields missing: file or files")
    except BaseException:
        await result.close()
        raise
    return result
