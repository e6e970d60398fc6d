"""Another account's task, upload or file answers exactly like a missing one."""

from __future__ import annotations

import httpx

from support.client import ApiClient, file_entry, make_client
from support.images import png_bytes
from support.server import Server


def test_cross_account_access_is_refused(client: ApiClient, server: Server) -> None:
    intruder = make_client(server)
    link = client.upload("mine.png", png_bytes())
    task = client.start([file_entry(link)], model="quick-clear-4x").json()["data"]["taskId"]

    theirs = intruder.post("/get-task-status", {"taskId": task})
    missing = intruder.post("/get-task-status", {"taskId": "00000000-0000-4000-8000-00000000000f"})
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == missing.json()

    reuse = intruder.start([file_entry(link)], model="quick-clear-4x")
    nothing = intruder.start([{"fileName": "never-uploaded.png"}], model="quick-clear-4x")
    assert reuse.status_code == nothing.status_code == 400
    assert "no such uploaded file" in reuse.json()["message"]

    assert intruder.post("/get-upscayl-history", {}).json()["pagination"]["total"] == 0
    assert client.wait(task)["status"] == "completed"


def test_cross_account_multipart_completion_reads_as_unknown(
    client: ApiClient, server: Server
) -> None:
    intruder = make_client(server)
    link = client.upload_url("m.png", "image/png", 100, multipart=True)
    put = httpx.put(link["parts"][0]["uploadURL"], content=png_bytes()[:100])
    parts = [{"PartNumber": 1, "ETag": put.headers["ETag"]}]
    body = {"data": {"uploadId": link["uploadId"], "key": link["key"], "parts": parts}}
    refused = intruder.post("/complete-multipart-upload", body)
    unknown = {"data": {**body["data"], "uploadId": "0" * 32}}
    assert refused.json() == client.post("/complete-multipart-upload", unknown).json()
    assert refused.status_code == 400  # the spec gives this operation no 404
    assert client.post("/complete-multipart-upload", body).status_code == 200
