"""An upload is stored as the type it was declared as, on both stores, whatever
the client named it: stores serve an object as the type its key's extension
names, so ``x.html`` declared as a PNG must not be served as a page. Through
get-upload-url (one PUT, and multipart) and start-task's direct upload, then
the object's own download link."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from support.app import client_for
from support.context import make_settings, new_principal
from support.images import png_bytes
from upscayl_cloud.services import uploads
from upscayl_cloud.services.context import Context, build_context
from upscayl_cloud.services.keys import Principal
from upscayl_cloud.storage.base import CompletedPart
from upscayl_cloud.storage.s3 import S3Storage

BASE_URL = "http://testserver"
PNG = png_bytes()


@dataclass
class Store:
    """A context on one store, and the HTTP client that reaches its links."""

    ctx: Context
    http: httpx.Client
    owner: Principal

    def served_type(self, file_name: str) -> str:
        key = uploads.storage_key(self.owner.account_id, file_name)
        response = self.http.get(self.ctx.storage.presign_get(BASE_URL, key, 2**42))
        assert response.status_code == 200, response.text
        assert response.content == PNG
        return response.headers["content-type"]


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    settings = make_settings(tmp_path / "data")
    if request.param == "local":  # the service's app answers the local store's links
        with client_for(settings) as app:
            ctx = app.app.state.ctx
            yield Store(ctx, app, new_principal(ctx)[1])
        return
    s3: S3Storage = request.getfixturevalue("s3_storage")
    local = build_context(settings)
    ctx = Context(settings=settings, db=local.db, storage=s3)
    with httpx.Client(timeout=30) as http:
        yield Store(ctx, http, new_principal(ctx)[1])
    local.db.dispose()


@pytest.mark.parametrize("original", ["x.html", "x.svg", "x.htm", "x"])
def test_a_single_put_upload_is_stored_as_its_declared_type(store: Store, original: str) -> None:
    link = uploads.request_upload(
        store.ctx, store.owner, BASE_URL, original, "image/png", len(PNG), False
    )
    assert link.file_name.endswith(".png"), link.file_name
    put = store.http.put(link.upload_url, content=PNG, headers={"content-type": "image/png"})
    assert put.status_code == 200, put.text
    assert store.served_type(link.file_name) == "image/png"


def test_a_multipart_upload_is_stored_as_its_declared_type(store: Store) -> None:
    link = uploads.request_upload(
        store.ctx, store.owner, BASE_URL, "x.html", "image/png", len(PNG), True
    )
    assert link.file_name.endswith("-x-html.png"), link.file_name
    [part] = link.parts
    put = store.http.put(part.upload_url, content=PNG)
    assert put.status_code == 200, put.text
    parts = [CompletedPart(1, put.headers["etag"])]
    uploads.complete_multipart(store.ctx, store.owner, link.upload_id or "", link.key or "", parts)
    assert store.served_type(link.file_name) == "image/png"


def test_a_direct_upload_is_stored_as_its_sniffed_type(store: Store) -> None:
    name = uploads.save_direct(store.ctx, store.owner, "x.html", "image/png", iter([PNG]))
    assert name.endswith("-x-html.png"), name
    assert store.served_type(name) == "image/png"
