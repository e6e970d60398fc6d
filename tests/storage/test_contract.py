"""One contract for every object store: the local folder and S3 (on SeaweedFS).

Each test runs against both real backends. Signed links are exercised over
HTTP with httpx: S3's links are answered by SeaweedFS itself, the local
store's by the service's own app (``api/routes/objects.py``), driven in
process by ``TestClient`` (an ``httpx.Client``), because that app is the
local store's S3. The two agree on every status here but one: an expired
download link is 403 on S3 and 410 locally (the service says the file is
gone rather than that the link is bad).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from support.app import client_for
from support.context import make_settings
from upscayl_cloud.storage.base import (
    MIN_PART_BYTES,
    CompletedPart,
    MultipartError,
    ObjectMissingError,
    ObjectStorage,
    ObjectTooLargeError,
)
from upscayl_cloud.storage.s3 import S3Storage

LOCAL_BASE_URL = "http://testserver"
PNG = {"content-type": "image/png"}


@dataclass
class Backend:
    """A store under test, the HTTP client that reaches its links, and a
    per-test key prefix (both stores live for the whole session)."""

    name: str
    store: ObjectStorage
    http: httpx.Client
    base_url: str
    prefix: str

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def in_future(self, seconds: float) -> int:
        return int((time.time() + seconds) * 1000)


@pytest.fixture(scope="session")
def local_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The service's app on a temporary folder store: it answers local links."""
    settings = make_settings(tmp_path_factory.mktemp("local") / "data")
    with client_for(settings) as client:
        yield client


@pytest.fixture(scope="session")
def s3_http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest) -> Backend:
    prefix = uuid.uuid4().hex
    if request.param == "local":
        app: TestClient = request.getfixturevalue("local_app")
        return Backend("local", app.app.state.ctx.storage, app, LOCAL_BASE_URL, prefix)
    s3: S3Storage = request.getfixturevalue("s3_storage")
    return Backend("s3", s3, request.getfixturevalue("s3_http"), LOCAL_BASE_URL, prefix)


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query)) | changes
    return urlunsplit(parts._replace(query=urlencode(query)))


def _signature_param(url: str) -> str:
    names = [name for name, _ in parse_qsl(urlsplit(url).query)]
    return next(name for name in names if name.lower().endswith("signature"))


def _extend_expiry(url: str) -> str:
    """The same link claiming an hour more: S3 counts seconds from signing
    (``X-Amz-Expires``), the local store an absolute time in ms (``expires``)."""
    query = dict(parse_qsl(urlsplit(url).query))
    name = next(name for name in query if name.lower() in ("expires", "x-amz-expires"))
    factor = 1 if name.lower() == "x-amz-expires" else 1000
    return _with_query(url, **{name: str(int(query[name]) + 3600 * factor)})


# -- objects -----------------------------------------------------------------------
def test_conforms_to_the_protocol(backend: Backend) -> None:
    assert isinstance(backend.store, ObjectStorage)


def test_write_read_size_delete(backend: Backend, tmp_path: Path) -> None:
    store, key = backend.store, backend.key("a/b/c.png")
    assert store.write_stream(key, iter([b"12", b"34"]), 10) == 4
    assert store.size(key) == 4
    assert store.read_head(key, 3) == b"123"
    assert store.read_head(key, 100) == b"1234"
    # A header's later parts: from an offset, short at the end, empty past it.
    assert store.read_head(key, 2, start=1) == b"23"
    assert store.read_head(key, 100, start=2) == b"34"
    assert store.read_head(key, 10, start=4) == store.read_head(key, 10, start=9) == b""
    store.download_to(key, tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == b"1234"
    store.delete(key)
    store.delete(key)  # deleting what is gone is not an error
    assert store.size(key) is None
    with pytest.raises(ObjectMissingError):
        store.read_head(key, 1)
    with pytest.raises(ObjectMissingError):
        store.download_to(key, tmp_path / "missing")


def test_empty_object(backend: Backend) -> None:
    key = backend.key("empty.bin")
    assert backend.store.write_stream(key, iter([]), 10) == 0
    assert backend.store.size(key) == 0
    assert backend.store.read_head(key, 16) == b""


def test_put_file(backend: Backend, tmp_path: Path) -> None:
    source = tmp_path / "result.png"
    source.write_bytes(b"\x89PNG" + bytes(range(256)) * 10)
    key = backend.key("results/0.png")
    assert backend.store.put_file(key, source) == source.stat().st_size
    backend.store.download_to(key, tmp_path / "back.png")
    assert (tmp_path / "back.png").read_bytes() == source.read_bytes()


def test_delete_prefix_takes_a_folder_only(backend: Backend) -> None:
    store = backend.store
    keys = ["r/t/1/0.png", "r/t/1/sub/1.png", "r/t/10/0.png", "r/t/2/0.png"]
    for name in keys:
        store.write_stream(backend.key(name), iter([b"x"]), 5)
    store.delete_prefix(backend.key("r/t/1"))
    assert [store.size(backend.key(name)) for name in keys] == [None, None, 1, 1]
    store.delete_prefix(backend.key("nothing/here"))  # nothing to delete is fine


def test_size_cap_holds_while_streaming(backend: Backend) -> None:
    consumed: list[int] = []

    def body() -> Iterator[bytes]:
        for n in range(100):
            consumed.append(n)
            yield b"x" * 6

    key = backend.key("capped")
    with pytest.raises(ObjectTooLargeError):
        backend.store.write_stream(key, body(), 10)
    assert consumed == [0, 1]  # stopped reading at the chunk that crossed the cap
    assert backend.store.size(key) is None


def test_streams_larger_than_a_part(backend: Backend) -> None:
    """Crosses S3's part boundary (5 MiB parts in tests): the multipart path."""
    chunk = bytes(range(256)) * 4096  # 1 MiB
    key = backend.key("big.bin")
    assert backend.store.write_stream(key, iter([chunk] * 11), 11 * len(chunk)) == 11 * len(chunk)
    assert backend.store.size(key) == 11 * len(chunk)
    with pytest.raises(ObjectTooLargeError):  # refused after a part was already sent
        backend.store.write_stream(backend.key("too-big"), iter([chunk] * 11), 7 * len(chunk))
    assert backend.store.size(backend.key("too-big")) is None
    if isinstance(backend.store, S3Storage):
        pending = backend.store.client.list_multipart_uploads(
            Bucket=backend.store.bucket, Prefix=backend.key("too-big")
        )
        assert not pending.get("Uploads"), "the refused stream's upload was not aborted"


# -- signed links --------------------------------------------------------------------
def test_presigned_put_accepts_the_declared_upload(backend: Backend) -> None:
    data, key = b"\x89PNG-body", backend.key("uploads/a.png")
    url = backend.store.presign_put(
        backend.base_url, key, "image/png", len(data), backend.in_future(60)
    )
    response = backend.http.put(url, content=data, headers=PNG)
    assert response.status_code == 200, response.text
    assert backend.store.read_head(key, 100) == data
    # As S3 answers a PUT: the quoted MD5 of the body, for a client to check.
    assert response.headers["etag"] == f'"{hashlib.md5(data).hexdigest()}"'


def test_presigned_put_refuses_anything_else(backend: Backend) -> None:
    data, key = b"\x89PNG-body", backend.key("uploads/a.png")
    url = backend.store.presign_put(
        backend.base_url, key, "image/png", len(data), backend.in_future(60)
    )
    other_key = url.replace("/uploads/a.png", "/uploads/b.png")
    attempts = {
        "tampered signature": (_with_query(url, **{_signature_param(url): "0" * 64}), data, PNG),
        "longer expiry": (_extend_expiry(url), data, PNG),
        "other key": (other_key, data, PNG),
        "wrong type": (url, data, {"content-type": "image/jpeg"}),
        "no type": (url, data, {}),
        # S3 compares the type it signed exactly: the local store read only
        # the media type, ignoring case, and took both.
        "type with a parameter": (url, data, {"content-type": "image/png; charset=binary"}),
        "type in capitals": (url, data, {"content-type": "IMAGE/PNG"}),
        "longer body": (url, data + b"!", PNG),
        "shorter body": (url, data[:-1], PNG),
    }
    for what, (target, body, headers) in attempts.items():
        response = backend.http.put(target, content=body, headers=headers)
        assert response.status_code == 403, f"{what}: {response.status_code} {response.text}"
    assert backend.store.size(key) is None
    assert backend.store.size(backend.key("uploads/b.png")) is None


def test_presigned_get(backend: Backend) -> None:
    key = backend.key("results/0.png")
    backend.store.write_stream(key, iter([b"\x89PNG-result"]), 100)
    url = backend.store.presign_get(backend.base_url, key, backend.in_future(60))
    response = backend.http.get(url)
    assert (response.status_code, response.content) == (200, b"\x89PNG-result")
    named = backend.store.presign_get(backend.base_url, key, backend.in_future(60), "cat 4x.png")
    disposition = backend.http.get(named).headers["content-disposition"]
    assert disposition.startswith("attachment") and "cat" in disposition
    tampered = _with_query(url, **{_signature_param(url): "0" * 64})
    assert backend.http.get(tampered).status_code == 403
    assert backend.http.put(url, content=b"overwrite").status_code == 403  # GET link, PUT verb
    assert backend.store.read_head(key, 100) == b"\x89PNG-result"


def test_expired_links_are_refused(backend: Backend) -> None:
    data, key = b"\x89PNG", backend.key("late.png")
    backend.store.write_stream(backend.key("kept.png"), iter([data]), 10)
    put = backend.store.presign_put(
        backend.base_url, key, "image/png", len(data), backend.in_future(1)
    )
    get = backend.store.presign_get(backend.base_url, backend.key("kept.png"), backend.in_future(1))
    time.sleep(2.2)  # S3 expiries are whole seconds
    assert backend.http.put(put, content=data, headers=PNG).status_code == 403
    assert backend.http.get(get).status_code in (403, 410)  # 410: local (see module doc)
    assert backend.store.size(key) is None


# -- multipart -----------------------------------------------------------------------
def _put_part(backend: Backend, key: str, upload_id: str, n: int, data: bytes) -> CompletedPart:
    url = backend.store.presign_part(
        backend.base_url, key, upload_id, n, len(data), backend.in_future(60)
    )
    response = backend.http.put(url, content=data)
    assert response.status_code == 200, response.text
    etag = response.headers["etag"]
    assert etag.strip('"') == hashlib.md5(data).hexdigest()
    return CompletedPart(n, etag)


def test_a_part_link_takes_its_signed_length_only(backend: Backend) -> None:
    """A part link takes exactly its length, as S3 binds it in a signed
    header: a client granted a small upload cannot park gigabytes in its
    parts, and a short part is refused at once, sent with Content-Length or
    (on the local store, which S3 would refuse outright) chunked."""
    store, key = backend.store, backend.key("uploads/bounded.png")
    upload_id = store.create_multipart(key)
    data = b"exactly-this"
    url = store.presign_part(backend.base_url, key, upload_id, 1, len(data), backend.in_future(60))
    longer = backend.http.put(url, content=data + b"!" * (1 << 20))
    assert longer.status_code == 403, longer.text
    shorter = backend.http.put(url, content=data[:-1])
    assert shorter.status_code == 403, shorter.text
    if backend.name == "local":
        chunked = backend.http.put(url, content=iter([data[:3], data[3:-1]]))
        assert chunked.status_code == 403, chunked.text
    exact = backend.http.put(url, content=data)
    assert exact.status_code == 200, exact.text
    part = CompletedPart(1, exact.headers["etag"])
    assert store.complete_multipart(key, upload_id, [part]) == len(data)
    assert store.read_head(key, 100) == data


def test_multipart_joins_parts_in_order(backend: Backend, tmp_path: Path) -> None:
    key = backend.key("uploads/big.png")
    upload_id = backend.store.create_multipart(key)
    first, last = b"a" * MIN_PART_BYTES, b"tail"
    parts = [
        _put_part(backend, key, upload_id, 1, first),
        _put_part(backend, key, upload_id, 2, last),
    ]
    assert backend.store.complete_multipart(key, upload_id, parts) == len(first) + len(last)
    backend.store.download_to(key, tmp_path / "joined")
    assert (tmp_path / "joined").read_bytes() == first + last


def test_multipart_refusals_say_why(backend: Backend) -> None:
    store, key = backend.store, backend.key("uploads/f.png")
    upload_id = store.create_multipart(key)
    small = _put_part(backend, key, upload_id, 1, b"small")
    last = _put_part(backend, key, upload_id, 2, b"last")
    refusals = [
        ([small, last], "5 MiB"),
        ([last, small], "ascending"),
        # SeaweedFS joined a part listed twice once; AWS and the local store refuse.
        ([last, last], "ascending order without repeats"),
        ([CompletedPart(1, '"0123456789abcdef0123456789abcdef"')], "ETag"),
        ([CompletedPart(3, small.etag)], "not uploaded"),
        ([], "no parts"),
        ([CompletedPart(10_001, small.etag)], "10001"),  # S3 max part number: 10000
    ]
    for parts, reason in refusals:
        with pytest.raises(MultipartError, match=reason):
            store.complete_multipart(key, upload_id, parts)
    with pytest.raises(MultipartError, match="unknown"):
        store.complete_multipart(key, uuid.uuid4().hex, [small])
    assert store.size(key) is None
    # A refusal leaves the upload open: the client can still complete it.
    assert store.complete_multipart(key, upload_id, [last]) == len(b"last")


def test_completing_a_completed_upload_again_answers_as_the_first_time(
    backend: Backend, tmp_path: Path
) -> None:
    """A client that lost the first answer (a 503 after the join) repeats the
    completion: both stores answer the stored object's size and join nothing
    again (SeaweedFS would re-join, even from fewer parts)."""
    store, key = backend.store, backend.key("uploads/twice.png")
    upload_id = store.create_multipart(key)
    first, last = b"a" * MIN_PART_BYTES, b"tail"
    parts = [
        _put_part(backend, key, upload_id, 1, first),
        _put_part(backend, key, upload_id, 2, last),
    ]
    assert store.complete_multipart(key, upload_id, parts) == len(first) + len(last)
    for again in (parts, parts[1:]):
        assert store.complete_multipart(key, upload_id, again) == len(first) + len(last)
    assert store.size(key) == len(first) + len(last)
    store.download_to(key, tmp_path / "joined")
    assert (tmp_path / "joined").read_bytes() == first + last


def test_abort_drops_the_upload(backend: Backend) -> None:
    store, key = backend.store, backend.key("uploads/gone.png")
    upload_id = store.create_multipart(key)
    part = _put_part(backend, key, upload_id, 1, b"data")
    store.abort_multipart(key, upload_id)
    store.abort_multipart(key, upload_id)  # aborting twice is not an error
    with pytest.raises(MultipartError, match="unknown"):
        store.complete_multipart(key, upload_id, [part])
    late = store.presign_part(backend.base_url, key, upload_id, 2, 4, backend.in_future(60))
    assert 400 <= backend.http.put(late, content=b"late").status_code < 500
    assert store.size(key) is None
