"""The whole flow over real HTTP: upload (direct, pre-signed, multipart), batch,
poll, download; the results are real upscaled images."""

from __future__ import annotations

import httpx

from support.client import ApiClient, file_entry
from support.images import png_bytes
from support.server import Server
from upscayl_cloud.services.imagecheck import inspect

FAST = {"model": "quick-clear-4x"}


def _check_file(entry: dict, scale: int, source: tuple[int, int], fmt: str) -> bytes:
    width, height = source[0] * scale, source[1] * scale
    assert entry["dimensions"] == {"width": width, "height": height}
    for field in (
        "fileName", "fileType", "path", "createdAt", "expiresAt", "originalFileName",
        "fileSize", "downloadLink", "thumbnailLink", "finalFileSize", "processedFileName",
    ):  # fmt: skip
        assert entry.get(field) not in (None, ""), field
    assert entry["expiresAt"] > entry["createdAt"]
    download = httpx.get(entry["downloadLink"])
    assert download.status_code == 200
    assert len(download.content) == entry["finalFileSize"]
    info = inspect(download.content)
    assert info is not None and info.mime_type == {"png": "image/png", "jpg": "image/jpeg"}[fmt]
    assert (info.width, info.height) == (width, height)
    assert entry["processedFileName"] in download.headers["content-disposition"]
    thumb = httpx.get(entry["thumbnailLink"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"
    return download.content


def test_direct_upload_flow(client: ApiClient) -> None:
    started = client.start_direct("kitten.png", png_bytes(24, 16), **FAST, scale="2")
    assert started.status_code == 200, started.text
    assert started.json()["data"]["message"]
    done = client.wait(started.json()["data"]["taskId"])
    assert done["status"] == "completed", done
    assert (done["progress"], done["scale"], done["saveImageAs"]) == ("100", "2", "jpg")
    assert (done["creditsDeducted"], done["deductedCredits"], done["batchMode"]) == (True, 1, False)
    [entry] = done["files"]
    assert entry["originalFileName"] == "kitten.png"
    assert entry["processedFileName"] == "kitten_upscayl_2x_quick-clear-4x.jpg"
    _check_file(entry, 2, (24, 16), "jpg")


def test_presigned_upload_flow_with_wrapped_bodies(client: ApiClient) -> None:
    data = png_bytes(20, 20)
    link = client.upload("photo.png", data)
    assert link["fileName"] != "photo.png" and link["fileName"].endswith("photo.png")
    response = client.start([file_entry(link)], **FAST, saveImageAs="png", scale="4")
    task_id = response.json()["data"]["taskId"]
    wrapped = client.post("/get-task-status", {"data": {"taskId": task_id}})
    assert wrapped.status_code == 200
    done = client.wait(task_id)
    assert done["status"] == "completed", done
    _check_file(done["files"][0], 4, (20, 20), "png")


def test_multipart_upload_flow(client: ApiClient, server: Server) -> None:
    data = png_bytes(16, 16, padding=6 * 1024 * 1024)
    link = client.upload_url("big.png", "image/png", len(data), multipart=True)
    assert link["partSize"] == 5 * 1024 * 1024 and len(link["parts"]) == 2
    parts = []
    for part in link["parts"]:
        start = (part["partNumber"] - 1) * link["partSize"]
        chunk = data[start : start + link["partSize"]]
        put = httpx.put(part["uploadURL"], content=chunk)
        assert put.status_code == 200, put.text
        parts.append({"PartNumber": part["partNumber"], "ETag": put.headers["ETag"]})
    body = {"data": {"uploadId": link["uploadId"], "key": link["key"], "parts": parts}}
    done = client.post("/complete-multipart-upload", body)
    assert done.json() == {"status": "success", "data": {"status": "success"}}
    task = client.start([file_entry(link)], **FAST, scale="2").json()["data"]["taskId"]
    result = client.wait(task)
    assert result["status"] == "completed", result
    _check_file(result["files"][0], 2, (16, 16), "jpg")


def test_batch_with_one_bad_file_delivers_the_good_ones(client: ApiClient) -> None:
    good = [client.upload(f"good{i}.png", png_bytes(16, 16)) for i in range(2)]
    # A PNG header (passes the API's sniffing) over garbage: only decoding finds out.
    broken = png_bytes(16, 16)[:40] + b"\x00garbage" * 20
    bad = client.upload("broken.png", broken)
    before = client.post("/get-upscayl-history", {}).json()["pagination"]["total"]
    entries = [file_entry(good[0]), file_entry(bad), file_entry(good[1])]
    task = client.start(entries, **FAST, scale="2").json()["data"]["taskId"]
    done = client.wait(task)
    assert done["status"] == "completed" and done["batchMode"] is True
    assert done["deductedCredits"] == 2
    assert [f["originalFileName"] for f in done["files"]] == ["good0.png", "good1.png"]
    assert "1 of 3 files failed" in done["error"] and "broken.png" in done["error"]
    history = client.post("/get-upscayl-history", {"batch": True}).json()
    assert [t["taskId"] for t in history["data"]] == [task]
    assert history["pagination"]["total"] == 1
    assert client.post("/get-upscayl-history", {}).json()["pagination"]["total"] == before + 1
