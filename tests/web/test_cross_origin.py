"""A page on another origin calls the API and uploads through a signed link,
in real Chromium against a real server (``UPSCAYL_CORS_ORIGINS``).

The page comes from a plain HTTP server of its own on loopback, as a web app
in front of a self-hosted server would; every request it makes goes through
Chromium's own CORS checks (preflights included). The same page reached as
``localhost`` instead of ``127.0.0.1`` is another origin, one the server does
not list. (A page Playwright made up, with no address, would count as public
and be kept off loopback by Chromium's local-network rules whatever the
server allows.)"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from support.context import new_principal
from support.images import png_bytes
from support.server import Server
from tests.web.conftest import SERVER_ENV

#: Runs in the page: get-upload-url, the PUT to its link, start-task, status;
#: returns what a page could read of each answer.
UPLOAD_AND_START = """
async ([api, key, png64]) => {
  const bytes = Uint8Array.from(atob(png64), (c) => c.charCodeAt(0));
  const json = {"X-API-Key": key, "Content-Type": "application/json"};
  const asked = await fetch(api + "/get-upload-url", {method: "POST", headers: json,
    body: JSON.stringify({originalFileName: "a.png", fileType: "image/png",
                          fileSize: bytes.length})});
  const link = await asked.json();
  const put = await fetch(link.data.uploadURL,
    {method: "PUT", headers: {"Content-Type": "image/png"}, body: bytes});
  const form = new FormData();
  form.append("files", JSON.stringify([{fileName: link.data.fileName}]));
  form.append("model", "quick-clear-4x");
  const started = await fetch(api + "/start-task",
    {method: "POST", headers: {"X-API-Key": key}, body: form});
  const task = await started.json();
  const status = await fetch(api + "/get-task-status",
    {method: "POST", headers: json, body: JSON.stringify({taskId: task.data.taskId})});
  return {asked: asked.status, put: put.status, etag: put.headers.get("ETag"),
          started: started.status, status: (await status.json()).data.status,
          remaining: status.headers.get("X-RateLimit-Remaining")};
}
"""

#: A page the server does not list: the browser refuses to let it read.
READ_HISTORY = """
async ([api, key]) => {
  try {
    const answer = await fetch(api + "/get-upscayl-history", {method: "POST",
      headers: {"X-API-Key": key, "Content-Type": "application/json"}, body: "{}"});
    return "read " + answer.status;
  } catch (error) {
    return error.name;
  }
}
"""


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!doctype html><title>another app</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def app_port(browser: Any) -> Iterator[int]:
    """The other app's page server (``browser`` first: it skips without Chromium)."""
    pages = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=pages.serve_forever, daemon=True).start()
    yield pages.server_address[1]
    pages.shutdown()
    pages.server_close()


@pytest.fixture(scope="module")
def listing(app_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that lists the app's origin. No workers: the task only has
    to be queued."""
    data = tmp_path_factory.mktemp("cors") / "data"
    origin = f"http://127.0.0.1:{app_port}"
    running = Server(data, workers=0, cors_origins=origin, **SERVER_ENV).start()
    yield running
    running.stop()


def _page_at(browser: Any, origin: str) -> Any:
    tab = browser.new_page()
    tab.set_default_timeout(60_000)
    tab.goto(origin + "/")
    return tab


def test_a_listed_origin_uploads_and_starts_a_task(
    browser: Any, listing: Server, app_port: int
) -> None:
    key = new_principal(listing.ctx, credits=5)[0]
    png = png_bytes(24, 16)
    tab = _page_at(browser, f"http://127.0.0.1:{app_port}")
    try:
        seen = tab.evaluate(UPLOAD_AND_START, [listing.url, key, base64.b64encode(png).decode()])
    finally:
        tab.close()
    assert (seen["asked"], seen["put"], seen["started"]) == (200, 200, 200)
    assert seen["status"] in {"pending", "processing"}
    # Exposed headers: the part ETag a multipart page needs, the limits to pace by.
    assert seen["etag"] and len(seen["etag"].strip('"')) == 32
    assert seen["remaining"] == "99"


def test_an_origin_not_listed_cannot_read_answers(
    browser: Any, listing: Server, app_port: int
) -> None:
    key = new_principal(listing.ctx)[0]
    tab = _page_at(browser, f"http://localhost:{app_port}")
    try:
        assert tab.evaluate(READ_HISTORY, [listing.url, key]) == "TypeError"
        # X-API-Key makes the browser ask first; the server refused, so the
        # call itself was never sent.
        log = listing.log()
        assert '"OPTIONS /get-upscayl-history HTTP/1.1" 400' in log
        assert '"POST /get-upscayl-history HTTP/1.1"' not in log
    finally:
        tab.close()
