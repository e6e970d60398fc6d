"""What only the S3 backend has: the store's headers, a public endpoint for
links, SigV4's limits, and links that never reach a log (on SeaweedFS)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from botocore.exceptions import ClientError

from support.services import seaweedfs_client
from upscayl_cloud.storage.base import CompletedPart
from upscayl_cloud.storage.s3 import MAX_PRESIGN_SECONDS, S3Storage
from upscayl_cloud.storage.s3client import make_client, redact_url


def _in(seconds: float) -> int:
    return int((time.time() + seconds) * 1000)


def _query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


@pytest.fixture
def key() -> str:
    return f"{uuid.uuid4().hex}/results/0.png"


def test_signed_links_never_reach_the_logs(
    s3_storage: S3Storage, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        links = [
            s3_storage.presign_put("", key, "image/png", 4, _in(60)),
            s3_storage.presign_get("", key, _in(60), "a.png"),
            s3_storage.presign_part("", key, s3_storage.create_multipart(key), 1, 10, _in(60)),
        ]
    signatures = [_query(link)["X-Amz-Signature"] for link in links]
    assert all(signature not in caplog.text for signature in signatures)
    assert all(
        signature not in redact_url(link) for signature, link in zip(signatures, links, strict=True)
    )


def test_objects_keep_their_type_and_download_name(
    s3_storage: S3Storage, key: str, tmp_path: Path
) -> None:
    source = tmp_path / "0.png"
    source.write_bytes(b"\x89PNG")
    s3_storage.put_file(key, source)
    response = httpx.get(s3_storage.presign_get("", key, _in(60), "chat 4\u00d7.png"))
    assert response.headers["content-type"] == "image/png"
    disposition = response.headers["content-disposition"]
    assert 'filename="chat 4_.png"' in disposition
    assert "filename*=UTF-8''chat%204%C3%97.png" in disposition


def test_only_image_keys_are_stored_as_images(s3_storage: S3Storage, key: str) -> None:
    """Whatever a key ends in, the store never serves it as a page or a script
    (the system's type table would say text/html or image/svg+xml, and so
    would SeaweedFS for a PUT typed application/octet-stream)."""
    expected = {
        "a.PNG": "image/png",
        "a.jpeg": "image/jpeg",
        "a.webp": "image/webp",
        "a.html": "binary/octet-stream",
        "a.svg": "binary/octet-stream",
        "a.png/x": "binary/octet-stream",
        "noextension": "binary/octet-stream",
    }
    for name, content_type in expected.items():
        stored = f"{key}/{name}"
        s3_storage.write_stream(stored, iter([b"<svg onload=alert(1)>"]), 100)
        head = s3_storage.client.head_object(Bucket=s3_storage.bucket, Key=stored)
        assert head["ContentType"] == content_type, name


def test_links_can_name_a_public_endpoint(
    s3_storage: S3Storage, seaweedfs: dict[str, str], key: str
) -> None:
    """The service may reach the store at one address and clients at another;
    SigV4 signs the host, so links must be signed for the clients' address."""
    public = seaweedfs["UPSCAYL_S3_ENDPOINT_URL"].replace("127.0.0.1", "localhost")
    signer = make_client(
        public,
        seaweedfs["UPSCAYL_S3_REGION"],
        seaweedfs["UPSCAYL_S3_ACCESS_KEY_ID"],
        seaweedfs["UPSCAYL_S3_SECRET_ACCESS_KEY"],
    )
    store = S3Storage(s3_storage.client, s3_storage.bucket, presign_client=signer)
    url = store.presign_put("", key, "image/png", 4, _in(60))
    assert urlsplit(url).hostname == "localhost"
    assert httpx.put(url, content=b"\x89PNG", headers={"content-type": "image/png"}).is_success
    assert store.size(key) == 4


def test_link_lifetimes_stay_within_sigv4_limits(s3_storage: S3Storage, key: str) -> None:
    month = s3_storage.presign_get("", key, _in(30 * 24 * 3600))
    assert _query(month)["X-Amz-Expires"] == str(MAX_PRESIGN_SECONDS)
    past = s3_storage.presign_get("", key, _in(-60))
    assert _query(past)["X-Amz-Expires"] == "1"


def test_processes_starting_together_all_find_their_bucket(
    seaweedfs: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With UPSCAYL_S3_CREATE_BUCKET, processes started together all found the
    bucket missing and all created it; the losers' BucketAlreadyOwnedByYou
    (real, from the store) ended their start with "Cannot use the object
    store". The race is set up by answering the first HEAD as it was answered
    before the winner created the bucket; a stand-in for that moment only."""
    bucket = f"race-{uuid.uuid4().hex[:12]}"

    winner, loser = (S3Storage(seaweedfs_client(seaweedfs), bucket) for _ in range(2))
    winner.ensure_bucket()
    not_yet = ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, "HeadBucket")
    monkeypatch.setattr(loser.client, "head_bucket", _raising(not_yet))
    loser.ensure_bucket()  # finds it made by the winner
    winner.write_stream("uploads/x.png", iter([b"png"]), 3)
    assert loser.size("uploads/x.png") == 3


def test_a_completion_that_overlapped_another_answers_with_the_object(
    s3_storage: S3Storage, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that timed out repeats its completion while the first still
    joins the parts: both find no object yet, and on AWS the later one is
    answered NoSuchUpload, though the object is whole. SeaweedFS joins the
    parts again instead, so AWS's answer is a stand-in here; the object and
    the first completion are real."""
    upload_id = s3_storage.create_multipart(key)
    url = s3_storage.presign_part("http://unused", key, upload_id, 1, 5, _in(60))
    sent = httpx.put(url, content=b"parts")
    assert sent.status_code == 200, sent.text
    parts = [CompletedPart(1, sent.headers["etag"])]
    assert s3_storage.complete_multipart(key, upload_id, parts) == 5
    gone = ClientError({"Error": {"Code": "NoSuchUpload", "Message": "gone"}}, "Complete")
    real_size = s3_storage.size
    looks: list[str] = []

    def size_as_before_the_first_finished(name: str) -> int | None:
        looks.append(name)
        return None if len(looks) == 1 else real_size(name)

    monkeypatch.setattr(s3_storage, "size", size_as_before_the_first_finished)
    monkeypatch.setattr(s3_storage.client, "complete_multipart_upload", _raising(gone))
    assert s3_storage.complete_multipart(key, upload_id, parts) == 5


def _raising(error: Exception) -> Callable[..., object]:
    def call(**_: object) -> object:
        raise error

    return call
