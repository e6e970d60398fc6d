"""The S3 store of the storage tests: a bucket on the session's SeaweedFS
(the ``seaweedfs`` fixture of ``tests/conftest.py``)."""

from __future__ import annotations

import time

import pytest

from support.services import seaweedfs_client
from upscayl_cloud.storage.s3 import S3Storage

BUCKET = "upscayl-test"
#: Small parts, so that streamed writes cross part boundaries with a few MiB.
TEST_PART_BYTES = 5 * 1024 * 1024


@pytest.fixture(scope="session")
def s3_storage(seaweedfs: dict[str, str]) -> S3Storage:
    """An ``S3Storage`` on a fresh bucket of the session's SeaweedFS."""
    store = S3Storage(seaweedfs_client(seaweedfs), BUCKET, part_bytes=TEST_PART_BYTES)
    # S3 answers before its filer is ready to create buckets: retry briefly.
    deadline = time.monotonic() + 20
    while True:
        try:
            store.ensure_bucket()
            return store
        except Exception:  # ClientError or StorageError, until the filer is up
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
