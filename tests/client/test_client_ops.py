"""Every operation of the low-level clients (sync and async) against a real server."""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.context import new_principal
from support.server import Server
from tests.client.helpers import FAST, QUICK_POLL, dimensions, image_bytes, write_image
from upscayl_cloud.client import (
    ApiError,
    AsyncClient,
    Client,
    TaskFailedError,
    UpscaylError,
    aio,
    upload_file,
)
from upscayl_cloud.client.uploads import uploaded_entry


def test_presigned_upload_start_wait_download(client: Client, tmp_path: Path) -> None:
    source = write_image(tmp_path / "cat.png", 24, 16)
    entry = upload_file(client, source)
    assert entry["fileType"] == "image/png" and entry["fileSize"] == source.stat().st_size
    task_id = client.start_task([entry], model=FAST, scale=2, save_image_as="png")
    seen: list[str] = []
    done = client.wait(task_id, timeout=60, on_status=lambda d: seen.append(d["status"]))
    assert done["status"] == "completed" and seen[-1] == "completed"
    assert client.get_task_status(task_id)["progress"] == "100"
    [result] = done["files"]
    out = client.download(result["downloadLink"], tmp_path / "out" / result["processedFileName"])
    assert dimensions(out) == (48, 32)
    thumb = client.download(result["thumbnailLink"], tmp_path / "thumb.webp")
    assert thumb.read_bytes()[8:12] == b"WEBP"


def test_direct_file(client: Client) -> None:
    task_id = client.start_task(file=("photo.jpg", image_bytes(20, 20, ".jpg")), model=FAST)
    done = client.wait(task_id, timeout=60, raise_on_failure=True)
    assert done["enhanceFace"] is False and done["saveImageAs"] == "jpg"
    assert done["files"][0]["originalFileName"] == "photo.jpg"


def test_face_flag_is_sent_and_a_refusal_is_explained(client: Client) -> None:
    """Face enhancement depends on the server (models installed or not); either
    way the flag reaches it, and a "no" comes back with a code and a reason."""
    data = image_bytes(20, 20, ".jpg")
    try:
        task_id = client.start_task(file=("face.jpg", data), model=FAST, enhance_face=True)
    except ApiError as refused:
        assert refused.status_code == 400 and refused.code and refused.message
        return
    try:
        done = client.wait(task_id, timeout=60, raise_on_failure=True)
    except TaskFailedError as failed:
        assert failed.task_id == task_id and "face" in failed.message
        assert client.get_task_status(task_id)["enhanceFace"] is True
        return
    assert done["enhanceFace"] is True


def test_history_pages_and_filters(client: Client) -> None:
    ids = [client.start_task(file=(f"{n}.png", image_bytes(16, 16)), model=FAST) for n in "ab"]
    for task_id in ids:
        client.wait(task_id, timeout=60)
    page = client.get_history(limit=1)
    assert page["pagination"]["total"] == 2 and page["pagination"]["hasMore"] is True
    assert [item["status"] for item in client.iter_history(limit=1)] == ["completed"] * 2
    assert len(list(client.iter_history(max_items=1))) == 1
    assert list(client.iter_history(failed=True)) == []


def test_capabilities_when_published(client: Client) -> None:
    caps = client.capabilities()  # the spec has none; a server may publish one
    assert caps is None or isinstance(caps.get("models"), list)


def test_errors_carry_the_spec_code_and_message(server: Server, client: Client) -> None:
    with pytest.raises(ApiError) as missing:
        client.get_task_status("30a89e69-c702-4247-9905-f0a53dfa45ab")
    assert (missing.value.code, missing.value.status_code) == ("NOT_FOUND", 404)
    with pytest.raises(ApiError) as bad_type:
        client.get_upload_url("a.gif", "image/gif", 10)
    assert bad_type.value.code == "INVALID_FILE_TYPE" and "JPEG" in bad_type.value.message
    with Client(server.url, "uc_not-a-key") as stranger, pytest.raises(ApiError) as denied:
        stranger.get_history()
    assert (denied.value.code, denied.value.status_code) == ("UNAUTHORIZED", 401)


def test_key_and_url_from_environment(
    server: Server, api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UPSCAYL_URL", server.url + "/")
    monkeypatch.setenv("UPSCAYL_API_KEY", api_key)
    with Client() as api:
        assert api.base_url == server.url
        assert api.get_history()["data"] == []
    monkeypatch.delenv("UPSCAYL_API_KEY")
    with pytest.raises(UpscaylError) as missing:
        Client()
    assert missing.value.code == "MISSING_API_KEY"


def test_insufficient_credits(server: Server) -> None:
    key = new_principal(server.ctx, credits=0)[0]
    with Client(server.url, key) as broke, pytest.raises(ApiError) as refused:
        broke.start_task(file=("x.png", image_bytes(16, 16)), model=FAST)
    assert (refused.value.code, refused.value.status_code) == ("INSUFFICIENT_CREDITS", 402)


def test_async_uploads_read_their_chunks_off_the_event_loop(server: Server, api_key: str) -> None:
    parted = image_bytes(24, 16, seed=5)
    readers: set[int] = set()

    def chunks() -> Iterator[bytes]:
        for piece in (parted[:100], parted[100:]):
            readers.add(threading.get_ident())
            yield piece

    async def flow() -> int:
        async with AsyncClient(server.url, api_key, poll=QUICK_POLL) as api:
            link = await api.get_upload_url("b.png", "image/png", len(parted))
            await api.put_upload(link["uploadURL"], chunks, len(parted), "image/png")
        return threading.get_ident()

    loop_thread = asyncio.run(flow())
    assert readers and loop_thread not in readers


def test_async_downloads_write_off_the_event_loop(
    server: Server, api_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writers: set[int] = set()
    real_append = aio._append

    def append(out: Any, chunk: bytes) -> None:
        writers.add(threading.get_ident())
        real_append(out, chunk)

    monkeypatch.setattr(aio, "_append", append)

    async def flow() -> int:
        async with AsyncClient(server.url, api_key, poll=QUICK_POLL) as api:
            task_id = await api.start_task(file=("a.png", image_bytes(16, 16)), model=FAST, scale=2)
            done = await api.wait(task_id, timeout=60, raise_on_failure=True)
            await api.download(done["files"][0]["downloadLink"], tmp_path / "a.png")
        return threading.get_ident()

    loop_thread = asyncio.run(flow())
    assert writers and loop_thread not in writers
    assert (tmp_path / "a.png").stat().st_size > 0


def test_async_client_every_operation(server: Server, api_key: str, tmp_path: Path) -> None:
    single, parted = image_bytes(16, 24), image_bytes(24, 16, seed=5)

    async def flow() -> None:
        async with AsyncClient(server.url, api_key, poll=QUICK_POLL) as api:
            link = await api.get_upload_url("a.png", "image/png", len(single))
            await api.put_upload(link["uploadURL"], single, len(single), "image/png")
            multi = await api.get_upload_url("b.png", "image/png", len(parted), multipart=True)
            [part] = multi["parts"]  # a small file: one (last) part of any size
            halves = [parted[:100], parted[100:]]  # a re-openable chunk source, streamed
            etag = await api.put_upload(part["uploadURL"], lambda: iter(halves), len(parted))
            assert etag
            await api.complete_multipart_upload(multi["uploadId"], multi["key"], [(1, etag)])
            entries = [
                uploaded_entry(link, "image/png", len(single)),
                uploaded_entry(multi, "image/png", len(parted)),
            ]
            task_id = await api.start_task(entries, model=FAST, scale="2", save_image_as="png")
            seen: list[str] = []
            done = await api.wait(
                task_id, timeout=60, on_status=lambda d: seen.append(d["status"]),
                raise_on_failure=True,
            )  # fmt: skip
            assert done["batchMode"] is True and len(done["files"]) == 2
            assert seen[-1] == "completed"
            info = await api.capabilities()
            assert info is not None and info["limits"]["maxFilesPerTask"] >= 1
            assert (await api.get_task_status(task_id))["status"] == "completed"
            first = next(f for f in done["files"] if f["fileName"] == link["fileName"])
            (tmp_path / "a.png").write_bytes(b"an earlier result")  # replaced
            out = await api.download(first["downloadLink"], tmp_path / "a.png")
            assert dimensions(out) == (32, 48) and list(tmp_path.iterdir()) == [out]
            assert [t["taskId"] async for t in api.iter_history(limit=1)] == [task_id]
            with pytest.raises(ApiError) as missing:
                await api.get_task_status("30a89e69-c702-4247-9905-f0a53dfa45ab")
            assert missing.value.code == "NOT_FOUND"

    asyncio.run(flow())


def test_async_client_has_the_sync_clients_signatures() -> None:
    """The documented calls work on both: same methods, same parameters and defaults."""
    public = [n for n in vars(Client) if not n.startswith("_") and callable(getattr(Client, n))]
    for name in public:
        if name == "close":  # AsyncClient.aclose, as httpx names it
            continue
        sync, aio = inspect.signature(getattr(Client, name)), getattr(AsyncClient, name, None)
        assert aio is not None, f"AsyncClient has no {name}()"
        assert inspect.signature(aio).parameters == sync.parameters, name


def test_a_files_entry_has_what_the_spec_requires_of_it() -> None:
    """A get-upload-url answer holds only what the spec requires of it
    (uploadURL, fileName, expiresAt); start-task's UploadedFile also requires
    fileType and fileSize, which the client fills in from what it asked for."""
    minimal = {"uploadURL": "https://s3/x", "fileName": "f7-a.png", "expiresAt": 1}
    assert uploaded_entry(minimal, "image/png", 10) == {
        "fileName": "f7-a.png",
        "fileType": "image/png",
        "fileSize": 10,
    }
    ours = {**minimal, "fileType": "image/jpeg", "fileSize": 9}
    assert uploaded_entry(ours, "image/png", 10)["fileType"] == "image/jpeg"


def test_downloads_reach_the_disk_before_they_take_the_results_name(
    server: Server, api_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A power cut after the rename but before the bytes were written back
    could leave a short file under the result's name, which a later run
    takes for done. A power cut cannot be staged: this watches the order of
    the calls instead (the partial file fsynced, then renamed over the
    name), in both clients."""
    calls: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(source: Any, dest: Any) -> None:
        calls.append(("replace", str(source)))
        real_replace(source, dest)

    with Client(server.url, api_key, poll=QUICK_POLL) as api:
        task_id = api.start_task(file=("a.png", image_bytes(16, 16)), model=FAST, scale=2)
        link = api.wait(task_id, timeout=60, raise_on_failure=True)["files"][0]["downloadLink"]
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)
        api.download(link, tmp_path / "sync.png")

    async def flow() -> None:
        async with AsyncClient(server.url, api_key) as api:
            await api.download(link, tmp_path / "async.png")

    asyncio.run(flow())
    assert [what for what, _ in calls] == ["fsync", "replace"] * 2, calls
    for (_, synced), (_, renamed) in zip(calls[::2], calls[1::2], strict=True):
        assert synced == renamed and renamed.endswith(".part")
    assert (tmp_path / "sync.png").read_bytes() == (tmp_path / "async.png").read_bytes()
