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
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"

#: Only our own files may run or load; images and uploads may also go to the
#: storage's signed links (an S3 endpoint on another origin), and object URLs
#: of the files being uploaded are shown as previews.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' blob: data: http: https:; connect-src 'self' http: https:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def _index() -> FileResponse:
    return FileResponse(
        STATIC_DIR / "index.html",
        media_type="text/html",
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-cache",
        },
    )


def install(app: FastAPI) -> None:
    """Serve the page at ``/`` and its assets under ``/web/``.

    Assets get their own prefix instead of a catch-all mount at ``/``, so
    unknown API routes still answer the API's JSON 404/405."""
    app.add_api_route("/", _index, methods=["GET"], include_in_schema=False)
    app.mount("/web", StaticFiles(directory=STATIC_DIR), name="web")
