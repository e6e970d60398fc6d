"""Cross-origin calls from web pages the operator names (``UPSCAYL_CORS_ORIGINS``).

A page served from another origin (a web app in front of a self-hosted
server, a page on the LAN) can only call the API, and read its answers, when
the server says so. The key travels in ``X-API-Key``, never in a cookie, so
credentials stay off (``Access-Control-Allow-Credentials`` is never sent).
The local store's signed links are answered by this same app, so uploads and
downloads through them work cross-origin too; an S3 bucket needs its own
CORS rules (docs/deployment.md).

Nothing is installed when no origin is configured: the server's own page is
same-origin, and a browser then refuses cross-origin reads, as before.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from upscayl_cloud.api.asgi import TrackedSend
from upscayl_cloud.api.errors import error_response, unexpected
from upscayl_cloud.services.errors import clip

#: Every method a client of the spec (and of the signed links) uses.
ALLOWED_METHODS = ["GET", "HEAD", "POST", "PUT"]
#: The headers a client sets itself (the rest are CORS-safelisted); Range
#: for resuming a download through a signed link.
ALLOWED_HEADERS = ["X-API-Key", "Content-Type", "Range"]
#: Headers a page must be able to read: ETag for multipart completion, the
#: rate-limit headers to pace itself, the file name and ranges of downloads.
EXPOSED_HEADERS = [
    "ETag",
    "Retry-After",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "RateLimit",
    "RateLimit-Policy",
    "Content-Disposition",
    "Content-Length",
    "Content-Range",
    "Accept-Ranges",
    "X-Request-ID",
]
#: Browsers cache a preflight this long (Chromium caps it at 2 hours).
PREFLIGHT_MAX_AGE_SECONDS = 600
#: For the operator and the orchestrator, never for pages: probes and
#: metrics answer without CORS headers, so no page reads them, even with ``*``.
OPERATIONS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def allowed_origin(origin: str | None, origins: Sequence[str]) -> str | None:
    """The ``Access-Control-Allow-Origin`` an answer to a page on ``origin``
    carries, as ``ApiCors`` gives it (for answers written outside the app:
    ``protocol.py``'s 408)."""
    if origin is None or not origins:
        return None
    if "*" in origins:
        return "*"
    return origin if origin in origins else None


class ApiCors(CORSMiddleware):
    """Starlette's CORS, with a refused preflight in the spec's error shape,
    the operations endpoints left out, and unexpected errors answered with
    the CORS headers a page needs to read them."""

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        super().__init__(
            app,
            allow_origins=origins,
            allow_methods=ALLOWED_METHODS,
            allow_headers=ALLOWED_HEADERS,
            expose_headers=EXPOSED_HEADERS,
            allow_credentials=False,
            # Chromium asked before a public page may call a private address.
            # Said yes only to origins listed by name: with "*" any website a
            # visitor opens could otherwise reach a server on their network.
            allow_private_network="*" not in origins,
            max_age=PREFLIGHT_MAX_AGE_SECONDS,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in OPERATIONS_PATHS:
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def simple_response(
        self, scope: Scope, receive: Receive, send: Send, request_headers: Headers
    ) -> None:
        """Starlette answers an unhandled exception outside every middleware,
        so without CORS headers: a page would see a bare network error for a
        500, or for a 503 while the database is down. It is answered here
        instead (``errors.unexpected`` logs it), with the headers."""
        tracked = TrackedSend(send)
        try:
            await super().simple_response(scope, receive, tracked, request_headers)
        except Exception as exc:
            if tracked.started:
                raise
            response = await unexpected(Request(scope), exc)
            with_cors = functools.partial(self.send, send=send, request_headers=request_headers)
            await response(scope, receive, with_cors)

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code == 200:
            return response
        refused = bytes(response.body).decode().removeprefix("Disallowed CORS ")
        origin = request_headers["origin"]
        if refused.startswith("origin"):
            message = (
                f"This server does not take cross-origin requests from {clip(origin)!r}; "
                "its operator can allow the origin (UPSCAYL_CORS_ORIGINS)"
            )
        elif refused.startswith("private-network"):
            message = (
                f"A page on {clip(origin)!r} may reach this server on a private network "
                "only if its operator lists that origin by name in UPSCAYL_CORS_ORIGINS "
                "(not through *)"
            )
        else:
            message = (
                f"Cross-origin request refused ({refused}): this API takes "
                f"{', '.join(ALLOWED_METHODS)} with the headers {', '.join(ALLOWED_HEADERS)}"
            )
        headers = {
            name: value
            for name, value in response.headers.items()
            if name.lower() not in ("content-length", "content-type")
        }
        return error_response(400, "BAD_REQUEST", message, headers)
