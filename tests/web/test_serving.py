"""How the page and its assets are served, over HTTP from a real server:
what a browser is told about caching and security. No browser needed."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from support.server import Server
from upscayl_cloud.web import CONTENT_SECURITY_POLICY


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    running = Server(tmp_path_factory.mktemp("serving") / "data", workers=0).start()
    with httpx.Client(base_url=running.url, timeout=30) as client:
        yield client
    running.stop()


def test_assets_are_revalidated_so_an_upgrade_reaches_open_browsers(http: httpx.Client) -> None:
    """Without Cache-Control a browser cached the modules by heuristic (a
    tenth of their age), and ran the old ones against an upgraded server."""
    for path in ("/", "/web/js/main.js", "/web/css/app.css"):
        first = http.get(path)
        assert first.status_code == 200, path
        assert first.headers["cache-control"] == "no-cache", path
    etag = first.headers["etag"]
    again = http.get("/web/css/app.css", headers={"If-None-Match": etag})
    assert again.status_code == 304  # revalidating costs no body
    assert again.headers["cache-control"] == "no-cache"


def test_the_page_exists_only_at_the_root_with_its_headers(http: httpx.Client) -> None:
    """A copy at /web/index.html ran without CSP, frame-ancestors, nosniff
    or Referrer-Policy, in the same origin (and sessionStorage)."""
    assert http.get("/web/index.html").status_code == 404
    assert http.get("/web/").status_code == 404
    page = http.get("/")
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert "form-action 'self'" in CONTENT_SECURITY_POLICY
    for path in ("/", "/web/js/api.js"):
        headers = http.get(path).headers
        assert headers["x-content-type-options"] == "nosniff", path
        assert headers["referrer-policy"] == "no-referrer", path


def test_head_of_the_page_answers_like_get(http: httpx.Client) -> None:
    """Uptime checks ask with HEAD; it answered 405."""
    head = http.head("/")
    assert head.status_code == 200
    assert head.headers["content-type"].startswith("text/html")
    assert head.content == b""
