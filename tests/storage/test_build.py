"""The composition root picks the backend from settings alone."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from support.context import make_settings
from upscayl_cloud.storage import build_storage
from upscayl_cloud.storage.local import LocalStorage
from upscayl_cloud.storage.s3 import S3Storage


def test_local_by_default(tmp_path: Path) -> None:
    assert isinstance(build_storage(make_settings(tmp_path)), LocalStorage)


def test_s3_from_settings_creates_the_bucket_and_signs_for_the_public_host(
    tmp_path: Path, seaweedfs: dict[str, str]
) -> None:
    s3 = {k.removeprefix("UPSCAYL_").lower(): v for k, v in seaweedfs.items()}
    endpoint = s3["s3_endpoint_url"]
    settings = make_settings(
        tmp_path,
        storage_backend="s3",
        **{**s3, "s3_bucket": f"build-{uuid.uuid4().hex[:10]}"},
        s3_create_bucket=True,
        s3_public_endpoint_url=endpoint.replace("127.0.0.1", "localhost"),
    )
    store = build_storage(settings)
    assert isinstance(store, S3Storage) and store.bucket == settings.s3_bucket
    url = store.presign_put("", "uploads/a/b.png", "image/png", 4, int(time.time() * 1000) + 60_000)
    assert urlsplit(url).hostname == "localhost"  # the public endpoint
    assert httpx.put(url, content=b"\x89PNG", headers={"content-type": "image/png"}).is_success
    assert store.size("uploads/a/b.png") == 4
