"""Objects in any S3 API (SeaweedFS, MinIO, AWS S3) through boto3.

The store itself checks the links: a presigned PUT binds method, key,
expiry, content type and content length into its SigV4 signature, so the
API hands out URLs and never proxies a byte. Multipart uploads are the
store's own (create, presigned ``upload_part``, complete), and its refusals
become ``MultipartError`` messages a client can act on.

Signed URLs are bearer credentials until they expire: this module never logs
one. Building clients and translating their errors is ``s3client.py``'s job.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from boto3.s3.transfer import TransferConfig
from botocore.client import BaseClient
from botocore.exceptions import BotoCoreError, ClientError

from upscayl_cloud.storage.base import (
    MAX_PARTS,
    CompletedPart,
    MultipartError,
    ObjectMissingError,
    ObjectTooLargeError,
    StorageError,
    image_type,
)
from upscayl_cloud.storage.s3client import (
    MISSING,
    error_code,
    hide_signatures,
    translate,
)

log = logging.getLogger(__name__)

#: SigV4's longest presigned lifetime (7 days); longer requests are clamped.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
#: S3's largest single part.
MAX_PART_BYTES = 5 * 1024**3
_MIB = 1024 * 1024

#: What the store's CompleteMultipartUpload refusals mean for the client.
_MULTIPART_MESSAGES = {
    "InvalidPart": "a listed part was not uploaded or its ETag does not match",
    "InvalidPartOrder": "parts must be listed in ascending order without repeats",
    "EntityTooSmall": "a part other than the last is smaller than 5 MiB",
    "NoSuchUpload": "unknown, aborted or already completed upload id",
    "MalformedXML": "the parts list is malformed or empty",
    "InvalidArgument": "the parts list is invalid (part numbers run from 1 to 10000)",
}


#: Any key that names no image: S3's own type for untyped bytes. Not
#: application/octet-stream, which SeaweedFS replaces by its guess from the
#: extension (text/html for .html).
_UNTYPED = "binary/octet-stream"


def _content_type(key: str) -> str:
    """Stored with the object, so presigned GETs serve images as images (and
    anything else as bytes to download, never as something to render: a
    guess from the system's table would store .html or .svg as a page)."""
    return image_type(key) or _UNTYPED


def _disposition(name: str) -> str:
    """RFC 6266: an ASCII fallback plus the exact UTF-8 name."""
    fallback = re.sub(r"[^A-Za-z0-9._ -]", "_", name) or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


class S3Storage:
    """The ``ObjectStorage`` contract over one bucket.

    ``presign_client`` signs the links clients receive, when clients reach
    the store at another address than the service does (SigV4 signs the
    host): e.g. ``http://seaweedfs:8333`` inside, ``https://s3.example.com``
    outside. ``base_url`` arguments are ignored: links point at the store.
    """

    def __init__(
        self,
        client: BaseClient,
        bucket: str,
        *,
        presign_client: BaseClient | None = None,
        part_bytes: int = 8 * _MIB,
    ) -> None:
        hide_signatures()  # whoever built the clients
        self.client = client
        self.bucket = bucket
        self._presigner = presign_client or client
        self._part_bytes = part_bytes
        self._transfer = TransferConfig(
            multipart_threshold=part_bytes, multipart_chunksize=part_bytes, max_concurrency=4
        )

    def ensure_bucket(self) -> None:
        """Create the bucket when missing (small installs, tests).

        Processes started together all find it missing and all create it:
        those that lose find it made by the winner (``BucketAlreadyOwnedByYou``,
        or ``BucketAlreadyExists`` on some stores), which is no failure. A
        bucket of someone else's has the same name only; the HEAD after it
        says so."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except BotoCoreError as exc:
            raise translate(f"bucket {self.bucket}", exc) from exc
        except ClientError as exc:
            if error_code(exc) not in MISSING | {"NoSuchBucket"}:
                raise translate(f"bucket {self.bucket}", exc) from exc
            region = self.client.meta.region_name
            where = (
                {}
                if region in (None, "us-east-1")
                else {"CreateBucketConfiguration": {"LocationConstraint": region}}
            )
            try:
                self.client.create_bucket(Bucket=self.bucket, **where)
            except BotoCoreError as exc:
                raise translate(f"bucket {self.bucket}", exc) from exc
            except ClientError as exc:
                if error_code(exc) == "BucketAlreadyOwnedByYou":
                    return
                if error_code(exc) != "BucketAlreadyExists":
                    raise translate(f"bucket {self.bucket}", exc) from exc
                with self._translated(self.bucket):
                    self.client.head_bucket(Bucket=self.bucket)  # ours after all?

    @contextmanager
    def _translated(self, key: str) -> Iterator[None]:
        """Every boto3 failure inside leaves as a StorageError (``s3client.translate``)."""
        try:
            yield
        except (ClientError, BotoCoreError) as exc:
            raise translate(key, exc) from exc

    # -- objects ----------------------------------------------------------------
    def write_stream(self, key: str, chunks: Iterator[bytes], max_bytes: int) -> int:
        """Buffer one part at a time; a body that fits one part is a single PUT.

        The cap is checked before each chunk is kept, and a refused or failed
        stream aborts its multipart upload, so nothing appears under ``key``.
        """
        part_bytes = min(max(self._part_bytes, math.ceil(max_bytes / MAX_PARTS)), MAX_PART_BYTES)
        buffer = bytearray()
        written = 0
        upload_id: str | None = None
        parts: list[CompletedPart] = []
        with self._translated(key):
            try:
                for chunk in chunks:
                    written += len(chunk)
                    if written > max_bytes:
                        raise ObjectTooLargeError(f"more than {max_bytes} bytes")
                    buffer += chunk
                    while len(buffer) >= part_bytes:
                        upload_id = upload_id or self.create_multipart(key)
                        with memoryview(buffer) as view:  # one copy, not two
                            body = bytes(view[:part_bytes])
                        parts.append(self._put_part(key, upload_id, len(parts) + 1, body))
                        del buffer[:part_bytes]
                if upload_id is None:
                    self.client.put_object(
                        Bucket=self.bucket, Key=key, Body=bytes(buffer),
                        ContentType=_content_type(key),
                    )  # fmt: skip
                    return written
                if buffer:
                    parts.append(self._put_part(key, upload_id, len(parts) + 1, bytes(buffer)))
                self.complete_multipart(key, upload_id, parts)
            except BaseException:
                if upload_id is not None:
                    self._abort_quietly(key, upload_id)
                raise
        return written

    def _abort_quietly(self, key: str, upload_id: str) -> None:
        """Best effort: the original failure matters more than this one, and a
        bucket lifecycle rule (AbortIncompleteMultipartUpload) catches leftovers."""
        try:
            self.abort_multipart(key, upload_id)
        except (StorageError, BotoCoreError) as exc:
            log.warning("could not abort multipart upload of %s: %s", key, exc)

    def _put_part(self, key: str, upload_id: str, number: int, body: bytes) -> CompletedPart:
        response = self.client.upload_part(
            Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
        )
        return CompletedPart(number, response["ETag"])

    def put_file(self, key: str, source: Path) -> int:
        size = source.stat().st_size
        with self._translated(key):
            self.client.upload_file(
                str(source), self.bucket, key,
                ExtraArgs={"ContentType": _content_type(key)}, Config=self._transfer,
            )  # fmt: skip
        return size

    def download_to(self, key: str, destination: Path) -> None:
        with self._translated(key):
            self.client.download_file(self.bucket, key, str(destination), Config=self._transfer)

    def read_head(self, key: str, length: int, start: int = 0) -> bytes:
        """A Range GET: sniffing a type must not download a 100 MB original."""
        try:
            if length > 0:
                response = self.client.get_object(
                    Bucket=self.bucket, Key=key, Range=f"bytes={start}-{start + length - 1}"
                )
                return bytes(response["Body"].read())
        except BotoCoreError as exc:
            raise translate(key, exc) from exc
        except ClientError as exc:
            # An empty object has no byte 0, nor any object a byte past its
            # end: S3 answers InvalidRange (416).
            if error_code(exc) not in ("InvalidRange", "416"):
                raise translate(key, exc) from exc
        if self.size(key) is None:
            raise ObjectMissingError(key)
        return b""

    def size(self, key: str) -> int | None:
        try:
            with self._translated(key):
                return int(self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except ObjectMissingError:
            return None

    def delete(self, key: str) -> None:
        with self._translated(key):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def delete_prefix(self, prefix: str) -> None:
        """Delete a "folder": ``a/b`` takes ``a/b/...`` but not ``a/bc``, as locally."""
        folder = prefix.rstrip("/") + "/"
        paginator = self.client.get_paginator("list_objects_v2")
        with self._translated(folder):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=folder):
                keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if not keys:
                    continue
                response = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True}
                )
                if errors := response.get("Errors"):
                    first = errors[0]
                    raise StorageError(
                        f"{len(errors)} objects under {folder} not deleted, "
                        f"first {first.get('Key')}: {first.get('Code')}"
                    )

    # -- links ------------------------------------------------------------------
    def _presign(self, operation: str, params: dict[str, object], expires_at_ms: int) -> str:
        seconds = math.ceil((expires_at_ms - time.time() * 1000) / 1000)
        seconds = min(max(seconds, 1), MAX_PRESIGN_SECONDS)
        log.debug("presigning %s of %s for %ss", operation, params.get("Key"), seconds)
        return str(
            self._presigner.generate_presigned_url(
                operation, Params={"Bucket": self.bucket, **params}, ExpiresIn=seconds
            )
        )

    def presign_put(
        self, base_url: str, key: str, content_type: str, max_length: int, expires_at_ms: int
    ) -> str:
        """Exactly ``max_length`` bytes of ``content_type``: both are signed headers,
        so the store answers 403 to any other type or length."""
        params = {"Key": key, "ContentType": content_type, "ContentLength": max_length}
        return self._presign("put_object", params, expires_at_ms)

    def presign_get(
        self, base_url: str, key: str, expires_at_ms: int, download_name: str | None = None
    ) -> str:
        params: dict[str, object] = {"Key": key}
        if download_name:
            params["ResponseContentDisposition"] = _disposition(download_name)
        return self._presign("get_object", params, expires_at_ms)

    # -- multipart ----------------------------------------------------------------
    def create_multipart(self, key: str) -> str:
        with self._translated(key):
            response = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=key, ContentType=_content_type(key)
            )
        return str(response["UploadId"])

    def presign_part(
        self,
        base_url: str,
        key: str,
        upload_id: str,
        part_number: int,
        max_length: int,
        expires_at_ms: int,
    ) -> str:
        """One part's PUT of exactly ``max_length`` bytes.

        The length is a signed header, as in ``presign_put``, so the store
        answers 403 to any other size: an unbounded part link would let a
        client granted one byte park up to 5 GiB per part until retention
        aborts the upload. The caller plans the split (every part but the
        last is full) and passes each part's own length.
        """
        params = {
            "Key": key,
            "UploadId": upload_id,
            "PartNumber": part_number,
            "ContentLength": max_length,
        }
        return self._presign("upload_part", params, expires_at_ms)

    def complete_multipart(self, key: str, upload_id: str, parts: list[CompletedPart]) -> int:
        """Join the parts; the store's refusal becomes a MultipartError message.

        Empty lists, part numbers out of range and lists not strictly
        ascending are refused here, because stores disagree on them
        (SeaweedFS: NoSuchUpload and InvalidPart, AWS: MalformedXML and
        InvalidArgument; SeaweedFS joins a part listed twice once, where AWS
        and the local store refuse the list), with the local store's words.

        An object already under ``key`` means the upload was completed (keys
        are generated, never reused): its size is the answer, and nothing is
        completed again. A client repeats a completion whose answer it lost
        (a 503 after the join succeeded); AWS would answer NoSuchUpload and
        SeaweedFS would join the same upload again, even from fewer parts, so
        the answer is ours, as the local store's is. The caller still checks
        the size against the declared one.
        """
        existing = self.size(key)
        if existing is not None:
            return existing
        if not parts:
            raise MultipartError("no parts given")
        if bad := [p.part_number for p in parts if not 1 <= p.part_number <= MAX_PARTS]:
            raise MultipartError(f"part number {bad[0]} is out of range (1 to {MAX_PARTS})")
        numbers = [part.part_number for part in parts]
        if numbers != sorted(set(numbers)):
            raise MultipartError(_MULTIPART_MESSAGES["InvalidPartOrder"])
        listed = [{"PartNumber": p.part_number, "ETag": p.etag} for p in parts]
        try:
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id,
                MultipartUpload={"Parts": listed},
            )  # fmt: skip
        except BotoCoreError as exc:
            raise translate(key, exc) from exc
        except ClientError as exc:
            # A repeated completion that overlapped the first: on AWS the
            # later one finds the upload gone, though the object is whole.
            if error_code(exc) == "NoSuchUpload" and (done := self.size(key)) is not None:
                return done
            message = _MULTIPART_MESSAGES.get(error_code(exc))
            if message is None:
                raise translate(key, exc) from exc
            raise MultipartError(message) from exc
        size = self.size(key)
        if size is None:
            raise StorageError(f"{key}: missing right after its multipart upload completed")
        return size

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Drop the parts; an upload already gone is not an error."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except BotoCoreError as exc:
            raise translate(key, exc) from exc
        except ClientError as exc:
            if error_code(exc) not in MISSING | {"NoSuchUpload"}:
                raise translate(key, exc) from exc
