"""Cross-origin calls from web pages the operator names (``UPSCAYL_CORS_ORIGINS``).

A page served from another origin (a web app in front of a self-hosted
server, a page on the LAN) can only call the API, and read its answers, when
the server says so. The key travels in ``X-API-Key``, never in a cookie, so
credentials stay off (``Access-Control-Allow-Credentials`` is never sent) and
``*`` is safe to offer. The local store's signed links are answered by this
same app, so uploads and downloads through them work cross-origin too; an S3
bucket needs its own CORS rules (docs/deployment.md).

Nothing is installed when no origin is configured: the server's own page is
same-origin, and a browser then refuses cross-origin reads, as before.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp

from upscayl_cloud.api.errors import error_response

#: Every method a client of the spec (and of the signed links) uses.
ALLOWED_METHODS = ["GET", "HEAD", "POST", "PUT"]
#: The headers a client sets itself; the rest are CORS-safelisted.
ALLOWED_HEADERS = ["X-API-Key", "Content-Type"]
#: Headers a page must be able to read: ETag for multipart completion, the
#: rate-limit headers to pace itself, Content-Disposition for the file name.
EXPOSED_HEADERS = [
    "ETag",
    "Retry-After",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "RateLimit",
    "RateLimit-Policy",
    "Content-Disposition",
]
#: Browsers cache a preflight this long (Chromium caps it at 2 hours).
PREFLIGHT_MAX_AGE_SECONDS = 600


class ApiCors(CORSMiddleware):
    """Starlette's CORS, with a refused preflight in the spec's error shape."""

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        super().__init__(
            app,
            allow_origins=origins,
            allow_methods=ALLOWED_METHODS,
            allow_headers=ALLOWED_HEADERS,
            expose_headers=EXPOSED_HEADERS,
            allow_credentials=False,
            # Chromium asks before a public page may call a private address:
            # exactly the self-hosted server an operator lists a page for.
            allow_private_network=True,
            max_age=PREFLIGHT_MAX_AGE_SECONDS,
        )

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code == 200:
            return response
        refused = bytes(response.body).decode().removeprefix("Disallowed CORS ")
        origin = request_headers["origin"]
        if refused.startswith("origin"):
            message = (
                f"This server does not take cross-origin requests from {origin[:100]}; "
                "its operator can allow the origin (UPSCAYL_CORS_ORIGINS)"
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
