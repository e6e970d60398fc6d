"""The local store's signed links: PUT uploads (and parts), GET downloads.

Only mounted with the local backend; with S3 the links point at S3 itself.
Not part of the spec's operations (clients follow URLs they were given), so
hidden from the OpenAPI document.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

from upscayl_cloud.api.deps import ContextDep
from upscayl_cloud.services import objects
from upscayl_cloud.services.errors import FileSizeExceededError, RangeNotSatisfiableError
from upscayl_cloud.storage.base import image_type
from upscayl_cloud.storage.local import LINK_PATH

router = APIRouter(include_in_schema=False)
#: The most of a PUT body held in memory before it goes to a temporary file.
#: Per connection, and one link may be PUT by any number of connections at
#: once, each allowed to go slowly (api/protocol.py): at 8 MiB, twenty
#: stalled PUTs on one link held 160 MiB. A small buffer keeps a small
#: body (a part, an icon) off the disk and costs a large one nothing.
SPOOL_BYTES = 64 * 1024
#: What the store is handed at a time, read back from the spool.
_READ_BYTES = 256 * 1024
#: Served from the web page's origin: a browser must never sniff an object
#: into HTML or run anything in it, even if a stored file were not an image.
_OBJECT_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
}


def _content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    return int(value) if value and value.isdigit() else None


@router.put(LINK_PATH + "{key:path}")
async def put_object(key: str, request: Request, ctx: ContextDep) -> Response:
    grant = objects.authorize_put(
        ctx,
        key,
        request.query_params,
        request.headers.get("content-type"),
        _content_length(request),
    )
    # Spool while counting, so the cap holds even without Content-Length: at
    # most SPOOL_BYTES in memory, the rest on disk. The store is handed the
    # body only once it is all in, so a slow client holds no worker thread.
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > grant.max_length:
                raise FileSizeExceededError(
                    f"The body is larger than the {grant.max_length} bytes this link was issued for"
                )
            spool.write(chunk)
        spool.seek(0)

        def chunks() -> Iterator[bytes]:
            return iter(lambda: spool.read(_READ_BYTES), b"")

        etag = await run_in_threadpool(objects.store_put, ctx, grant, chunks())
    return Response(status_code=200, headers={"ETag": etag})


class _ObjectResponse(FileResponse):
    """A stored file, whose ``Range`` is read as S3 reads it: one that cannot
    be parsed (``bytes=junk``, ``bytes=5-2``) is ignored and the whole file
    sent (RFC 9110 lets a server ignore an invalid Range), and one past the
    end is a 416 in the error shape. Starlette answered both in plain text,
    which no client of ours reads."""

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader:
            return []  # no range: the whole file
        except RangeNotSatisfiable:
            # Raised before anything is sent, so the error handlers answer it.
            raise RangeNotSatisfiableError(file_size) from None


# HEAD too: download tools ask for the size and name before they fetch.
@router.api_route(LINK_PATH + "{key:path}", methods=["GET", "HEAD"])
def get_object(key: str, request: Request, ctx: ContextDep) -> Response:
    download = objects.open_download(ctx, key, request.query_params)
    return _ObjectResponse(
        download.path,
        media_type=image_type(download.path.name) or "application/octet-stream",
        filename=download.download_name,
        content_disposition_type="attachment" if download.download_name else "inline",
        headers=_OBJECT_HEADERS,
    )
