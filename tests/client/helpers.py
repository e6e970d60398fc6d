"""Helpers of the client tests: tiny real images (numpy + libvips), quick timings,
and a proxy that gives results hostile names."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pyvips

from support.images import png_bytes
from tests.client.relay import LoopbackHTTP
from upscayl_cloud.client import PollSchedule, RetryPolicy

MIB = 1024 * 1024
FAST = "quick-clear-4x"
#: Quick polls and retries: tiny images finish within a second. A fresh key may
#: make 100 status calls an hour: up to 45 of them at once.
QUICK_POLL = PollSchedule(initial=0.1, factor=1.5, maximum=0.5, burst=90)
QUICK_RETRY = RetryPolicy(attempts=4, backoff_base=0.05, backoff_cap=0.2)


def image_bytes(width: int, height: int, suffix: str = ".png", seed: int = 0) -> bytes:
    """A small noisy RGB image encoded by libvips (``.png``, ``.jpg`` or ``.webp``)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return pyvips.Image.new_from_array(pixels).write_to_buffer(suffix)


def write_image(path: Path, width: int = 24, height: int = 16, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(width, height, path.suffix, seed))
    return path


def big_png(path: Path, size: int) -> Path:
    """A 16 px PNG padded (with a chunk decoders skip) to about ``size`` bytes:
    multipart-sized, yet it upscales in milliseconds."""
    path.write_bytes(png_bytes(16, 16, padding=size))
    return path


def dimensions(path: Path) -> tuple[int, int]:
    image = pyvips.Image.new_from_file(str(path))
    return image.width, image.height


#: The path prefix of links that :class:`RenamingProxy` sends through itself.
_VIA = "/via-proxy"


class RenamingProxy(LoopbackHTTP):
    """A proxy in front of the real server that answers hostile ``processedFileName``s
    (and, with ``status_outage``, stands for a server that is down for a while).

    A stand-in for a failure we cannot provoke for real: our server always
    names results itself, safely, but the client must not trust any server.
    Every request is forwarded unchanged to ``upstream``; only the files of
    get-task-status answers get ``names[originalFileName]`` as their
    ``processedFileName``. Uploads and downloads use the real server's signed
    links directly, so everything else is real. With ``status_outage``, every
    get-task-status during that many seconds from the first one fails, by a
    dropped connection and a 503 in turn, as while a server restarts. History
    pages are renamed alike; ``history`` stands for servers whose
    get-upscayl-history is of no use to the client's sweep: ``"refused"``
    answers it 404 (a server without it), ``"anonymous"`` drops each item's
    ``taskId`` (the spec's ``ProcessingTask`` has none), ``"linkless"`` each
    file's ``downloadLink`` (a server that signs links in status answers only),
    ``"thumbless"`` each ``thumbnailLink``, ``"partial"`` lists only the first
    file of each task, and ``"broken"`` answers it 500.
    ``thumbnails_gone`` points every ``thumbnailLink`` at nothing (404), and
    ``status_throttled`` answers every get-task-status 429 with a
    ``Retry-After`` of 1 s (a server that never lets the client in), and
    ``unauthorized_upload`` answers 401 to the get-upload-url of the file of
    that name (a key revoked between two uploads of one run). ``portal_pages``
    answers that many first get-task-status calls 200 with an HTML page (a
    captive portal or proxy in the way), ``upload_unavailable`` answers every
    get-upload-url 503 with ``Retry-After: 1`` for that many seconds from the
    first (a server whose store is briefly away), ``start_throttled``
    answers every start-task 429 with an hour's ``Retry-After`` (an hourly
    limit used up), and history ``"stuck"``
    answers every page with ``hasMore`` and the same ``nextOffset``.
    ``download_outage`` sends the result links of status and history answers
    through the proxy, which drops every download for that many seconds from
    the first (a store that is away for a while after the tasks finished);
    ``put_unavailable`` sends the upload links through it, which answers
    every PUT 503 with ``Retry-After: 10`` (a store whose disk is full).
    """

    def __init__(
        self,
        upstream: str,
        names: Mapping[str, str],
        status_outage: float = 0.0,
        history: str = "real",
        thumbnails_gone: bool = False,
        status_throttled: bool = False,
        unauthorized_upload: str | None = None,
        portal_pages: int = 0,
        start_throttled: bool = False,
        upload_unavailable: float = 0.0,
        download_outage: float = 0.0,
        put_unavailable: bool = False,
    ) -> None:
        self.upstream, self.names = upstream, dict(names)
        self.status_outage = status_outage
        self.history = history
        self.thumbnails_gone = thumbnails_gone
        self.status_throttled = status_throttled
        self.unauthorized_upload = unauthorized_upload
        self.portal_pages = portal_pages
        self.start_throttled = start_throttled
        self.upload_unavailable = upload_unavailable
        self.download_outage = download_outage
        self.put_unavailable = put_unavailable
        self.downloads_began: float | None = None
        self.dropped_downloads = 0
        self.puts: list[float] = []  # when each PUT came (put_unavailable)
        self.unavailable_began: float | None = None
        self.outage_began: float | None = None
        self.refused = 0
        self.hits: list[str] = []  # the paths of the API calls, in order
        self._http = httpx.Client(timeout=30)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the OpenAPI document and /capabilities
                if self.path.startswith(_VIA):  # a result link sent through us
                    if proxy._downloads_down():
                        proxy.dropped_downloads += 1
                        self.close_connection = True
                        return
                    answer = proxy._http.get(proxy.upstream + self.path[len(_VIA) :])
                    self._relay(answer, answer.content)
                    return
                key = self.headers.get("X-API-Key")
                headers = {"X-API-Key": key} if key else {}
                answer = proxy._http.get(proxy.upstream + self.path, headers=headers)
                self._relay(answer, answer.content)

            def do_POST(self) -> None:
                sent = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                proxy.hits.append(self.path)
                if self.path == "/get-task-status" and proxy._down():
                    proxy.refused += 1
                    if proxy.refused % 2:  # a dropped connection, then a 503
                        self.close_connection = True
                        return
                    self.send_error(503, "Service Unavailable")
                    return
                if self.path == "/get-task-status" and proxy.portal_pages > 0:
                    proxy.portal_pages -= 1
                    page = b"<html><body>Sign in to the hotel Wi-Fi</body></html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                    return
                if self.path == "/get-upload-url" and proxy._unavailable():
                    self._refuse(503, "SERVICE_UNAVAILABLE", {"Retry-After": "1"})
                    return
                if self.path == "/start-task" and proxy.start_throttled:
                    self._refuse(429, "RATE_LIMIT_EXCEEDED", {"Retry-After": "3600"})
                    return
                if self.path == "/get-task-status" and proxy.status_throttled:
                    self._refuse(429, "RATE_LIMIT_EXCEEDED", {"Retry-After": "1"})
                    return
                revoked = proxy.unauthorized_upload
                if self.path == "/get-upload-url" and revoked and revoked.encode() in sent:
                    self._refuse(401, "UNAUTHORIZED", {})
                    return
                if self.path == "/get-upscayl-history" and proxy.history == "refused":
                    self.send_error(404, "Not Found")
                    return
                if self.path == "/get-upscayl-history" and proxy.history == "broken":
                    self._refuse(500, "INTERNAL_ERROR", {})
                    return
                keep = ("X-API-Key", "Content-Type")
                headers = {h: self.headers[h] for h in keep if self.headers.get(h)}
                answer = proxy._http.post(proxy.upstream + self.path, content=sent, headers=headers)
                content = answer.content
                if self.path == "/get-upload-url" and answer.is_success and proxy.put_unavailable:
                    body = answer.json()
                    body["data"]["uploadURL"] = proxy._via(body["data"]["uploadURL"])
                    content = json.dumps(body).encode()
                if self.path == "/get-task-status" and answer.is_success:
                    body = answer.json()
                    content = proxy._rename([body.get("data") or {}], body)
                if self.path == "/get-upscayl-history" and answer.is_success:
                    body = answer.json()
                    for task in body.get("data") or []:
                        if proxy.history == "anonymous":
                            task.pop("taskId", None)
                        if proxy.history == "partial":
                            task["files"] = (task.get("files") or [])[:1]
                        for entry in task.get("files") or []:
                            if proxy.history == "linkless":
                                entry.pop("downloadLink", None)
                            if proxy.history == "thumbless":
                                entry.pop("thumbnailLink", None)
                    if proxy.history == "stuck":
                        body["pagination"] = {**body["pagination"], "hasMore": True}
                        body["pagination"]["nextOffset"] = 2**40
                    content = proxy._rename(body.get("data") or [], body)
                self._relay(answer, content)

            def do_PUT(self) -> None:  # an upload link sent through us
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                proxy.puts.append(time.monotonic())
                self._refuse(503, "SERVICE_UNAVAILABLE", {"Retry-After": "10"})

            def _refuse(self, status: int, code: str, headers: dict[str, str]) -> None:
                refusal = json.dumps({"error": code, "message": "refused by the proxy"}).encode()
                self.send_response(status)
                for name, value in {**headers, "Content-Type": "application/json"}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(refusal)))
                self.end_headers()
                self.wfile.write(refusal)

            def _relay(self, answer: httpx.Response, content: bytes) -> None:
                self.send_response(answer.status_code)
                for name in ("Content-Type", "Retry-After"):
                    if name in answer.headers:
                        self.send_header(name, answer.headers[name])
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, *args: object) -> None:
                pass

        self._listen(Handler)

    def _down(self) -> bool:
        """Whether status calls fail: for ``status_outage`` seconds from the first."""
        if self.outage_began is None:
            self.outage_began = time.monotonic()
        return time.monotonic() - self.outage_began < self.status_outage

    def _unavailable(self) -> bool:
        """Whether get-upload-url answers 503: for ``upload_unavailable`` seconds."""
        if self.unavailable_began is None:
            self.unavailable_began = time.monotonic()
        return time.monotonic() - self.unavailable_began < self.upload_unavailable

    def _downloads_down(self) -> bool:
        """Whether downloads fail: for ``download_outage`` seconds from the first."""
        if self.downloads_began is None:
            self.downloads_began = time.monotonic()
        return time.monotonic() - self.downloads_began < self.download_outage

    def _via(self, link: str) -> str:
        """``link`` of the upstream server, sent through this proxy instead."""
        assert link.startswith(self.upstream), link
        return self.url + _VIA + link[len(self.upstream) :]

    def _rename(self, tasks: list[dict[str, Any]], body: dict[str, Any]) -> bytes:
        """``body`` with the files of ``tasks`` (its parts) renamed."""
        for task in tasks:
            for entry in task.get("files") or []:
                for link in ("downloadLink", "thumbnailLink"):
                    if self.download_outage and entry.get(link):
                        entry[link] = self._via(entry[link])
                if self.thumbnails_gone and "thumbnailLink" in entry:
                    entry["thumbnailLink"] = f"{self.upstream}/no-such-thumbnail.webp"
                original = entry.get("originalFileName")
                if original in self.names:
                    entry["processedFileName"] = self.names[original]
        return json.dumps(body).encode()

    def _closed(self) -> None:
        self._http.close()


@contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """``folder``, taking no new file while the block runs: a real refusal
    from the kernel, as on a read-only disk. A user is refused by the
    folder's mode; root (these tests run as root in containers) writes
    whatever the mode, so there the folder is made immutable (``chattr +i``),
    which binds root too. Skipped where neither can be done."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
        return
    if shutil.which("chattr") is None:
        pytest.skip("cannot make a folder read-only here: no chattr")
    made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot make a folder read-only here: {made.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
