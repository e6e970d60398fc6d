"""The browser UI: static files served by the API process, nothing else.

Everything the page does goes through the public API (the same calls any
client makes), so the UI needs no route of its own beyond these files. Plain
HTML, CSS and ES modules with no build step: see docs/web.md for why.
``index.html`` is served at ``/``; its scripts and styles under ``/web/``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).resolve().parent / "static"

#: The folders served under ``/web/``: the page's assets, never the page
#: itself (a second copy at /web/index.html ran with none of its headers).
ASSET_DIRS = ("css", "js")

#: Only our own files may run or load, and forms post only here. Images and
#: uploads may also go to the storage's signed links: an S3 endpoint on any
#: origin (its public URL is the operator's, and a proxy may rewrite it), so
#: img-src and connect-src stay open to http(s). Object URLs of the files
#: being uploaded are shown as previews.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' blob: data: http: https:; connect-src 'self' http: https:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

#: On the page and on every asset. no-cache: revalidated on each use (the
#: ETag makes that a 304), else a browser kept running the old modules for
#: days after an upgrade, by heuristic caching, against the new server.
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


class _Assets(StaticFiles):
    """StaticFiles whose answers (304s included) carry HEADERS."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        return response


def _index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=HEADERS)


def install(app: FastAPI) -> None:
    """Serve the page at ``/`` and its assets under ``/web/``.

    Assets get their own prefix instead of a catch-all mount at ``/``, so
    unknown API routes still answer the API's JSON 404/405."""
    # HEAD too: uptime checks and link checkers ask with it (405 before).
    app.add_api_route("/", _index, methods=["GET", "HEAD"], include_in_schema=False)
    for folder in ASSET_DIRS:
        app.mount(f"/web/{folder}", _Assets(directory=STATIC_DIR / folder), name=f"web-{folder}")
