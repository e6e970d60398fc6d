"""A small client of the API, written against the spec (as any client would be)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from support.context import new_principal
from support.server import Server


class ApiClient:
    def __init__(self, base_url: str, key: str | None) -> None:
        headers = {"X-API-Key": key} if key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=60)

    def post(self, path: str, body: Any = None) -> httpx.Response:
        return self.http.post(path, json=body if body is not None else {})

    def upload_url(self, name: str, file_type: str, size: int, **extra: Any) -> dict[str, Any]:
        body = {"originalFileName": name, "fileType": file_type, "fileSize": size, **extra}
        response = self.post("/get-upload-url", body)
        assert response.status_code == 200, response.text
        return response.json()["data"]

    def upload(self, name: str, data: bytes, file_type: str = "image/png") -> dict[str, Any]:
        link = self.upload_url(name, file_type, len(data))
        put = httpx.put(link["uploadURL"], content=data, headers={"content-type": file_type})
        assert put.status_code == 200, put.text
        return link

    def start(self, files: list[dict[str, Any]] | None = None, **fields: str) -> httpx.Response:
        parts: dict[str, Any] = {}
        if files is not None:
            parts["files"] = (None, json.dumps(files), "application/json")
        return self.http.post("/start-task", data=fields, files=parts or {"_": ("", b"")})

    def start_direct(self, name: str, data: bytes, **fields: str) -> httpx.Response:
        return self.http.post(
            "/start-task", data=fields, files={"file": (name, data, "application/octet-stream")}
        )

    def status(self, task_id: str) -> dict[str, Any]:
        response = self.post("/get-task-status", {"taskId": task_id})
        assert response.status_code == 200, response.text
        return response.json()["data"]

    def wait(self, task_id: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = self.status(task_id)
            if data["status"] in ("completed", "failed"):
                return data
            time.sleep(0.25)
        raise AssertionError(f"task {task_id} did not finish: {data}")


def file_entry(link: dict[str, Any]) -> dict[str, Any]:
    return {
        "fileName": link["fileName"],
        "fileType": link["fileType"],
        "fileSize": link["fileSize"],
    }


def make_client(server: Server, credits: int = 20) -> ApiClient:
    """A client with a fresh key (and account) on ``server``."""
    return ApiClient(server.url, new_principal(server.ctx, credits=credits)[0])
