"""get-upload-url's multipart uploads on S3: no upload is left that no row
records (the sweeper aborts only uploads in the table, so one left behind by
a failed request would hold its parts in the bucket for good), and its part
links take the planned split and nothing more."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy.exc import IntegrityError

from support.context import new_principal
from upscayl_cloud.services import uploads
from upscayl_cloud.services.context import Context
from upscayl_cloud.services.keys import Principal
from upscayl_cloud.storage.base import MIN_PART_BYTES, CompletedPart
from upscayl_cloud.storage.s3 import S3Storage


def test_a_failed_insert_aborts_the_multipart_upload(ctx: Context, s3_storage: S3Storage) -> None:
    on_s3 = Context(settings=ctx.settings, db=ctx.db, storage=s3_storage)
    # An account that is gone (a real foreign-key refusal, after the store's
    # CreateMultipartUpload succeeded).
    ghost = Principal(account_id=str(uuid.uuid4()), key_id=str(uuid.uuid4()))
    with pytest.raises(IntegrityError):
        uploads.request_upload(on_s3, ghost, "", "a.png", "image/png", 10, multipart=True)
    listed = s3_storage.client.list_multipart_uploads(
        Bucket=s3_storage.bucket, Prefix=f"uploads/{ghost.account_id}/"
    )
    assert listed.get("Uploads", []) == []


def test_part_links_take_the_planned_split_only(ctx: Context, s3_storage: S3Storage) -> None:
    """Each part link signs its own length: full parts, then the remainder. A
    client granted a few bytes cannot park more in any part (S3 allows 5 GiB
    per part, and an unfinished upload sits until retention aborts it)."""
    settings = ctx.settings.model_copy(update={"multipart_part_bytes": MIN_PART_BYTES})
    on_s3 = Context(settings=settings, db=ctx.db, storage=s3_storage)
    owner = new_principal(ctx)[1]
    data = bytes(range(256)) * (MIN_PART_BYTES // 256) + b"end"
    link = uploads.request_upload(on_s3, owner, "", "a.png", "image/png", len(data), True)
    first, last = link.parts
    refused = {
        "part 1, short (a client making it the last)": (first, data[: MIN_PART_BYTES - 1]),
        "part 1, long": (first, data[: MIN_PART_BYTES + 1]),
        "part 2, long": (last, b"end" + b"!" * (1 << 20)),
        "part 2, short": (last, b"en"),
    }
    with httpx.Client(timeout=30) as http:
        for what, (part, body) in refused.items():
            response = http.put(part.upload_url, content=body)
            assert response.status_code == 403, f"{what}: {response.status_code}"
        etags = [
            http.put(part.upload_url, content=body).headers["etag"]
            for part, body in ((first, data[:MIN_PART_BYTES]), (last, b"end"))
        ]
    completed = [CompletedPart(n, etag) for n, etag in enumerate(etags, start=1)]
    uploads.complete_multipart(on_s3, owner, link.upload_id or "", link.key or "", completed)
    assert s3_storage.size(link.key or "") == len(data)


def test_a_one_byte_multipart_upload_takes_one_byte(ctx: Context, s3_storage: S3Storage) -> None:
    on_s3 = Context(settings=ctx.settings, db=ctx.db, storage=s3_storage)
    link = uploads.request_upload(on_s3, new_principal(ctx)[1], "", "a.png", "image/png", 1, True)
    [part] = link.parts
    with httpx.Client(timeout=30) as http:
        assert http.put(part.upload_url, content=b"x" * (1 << 20)).status_code == 403
        assert http.put(part.upload_url, content=b"x").status_code == 200
