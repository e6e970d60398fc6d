"""get-upload-url on S3 leaves no multipart upload that no row records: the
sweeper aborts only uploads in the table, so one left behind by a failed
request would hold its parts in the bucket for good."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.exc import IntegrityError

from upscayl_cloud.services import uploads
from upscayl_cloud.services.context import Context
from upscayl_cloud.services.keys import Principal
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
