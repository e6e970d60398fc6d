"""A cap on the JSON operations' request bodies, before anything parses them.

FastAPI reads a JSON body whole into memory and parses it before the key is
checked, so without a cap any client (no key needed) could make the process
hold hundreds of megabytes per request. Every JSON body this API takes is
small (the largest, a multipart completion, lists at most a few thousand
parts), so a body over ``JSON_BODY_LIMIT_BYTES`` is refused with 400 in the
spec's error shape: at once when ``Content-Length`` says so, else as soon as
the streamed body passes the cap. The refusal is counted against the key's
rate limit like any other (401 without a valid key). start-task's form and the local store's
signed PUTs have caps of their own (``api/form.py``, ``routes/objects.py``)
and are left alone.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from upscayl_cloud.api.deps import count_unread
from upscayl_cloud.api.errors import error_response, rate_headers, service_error_response
from upscayl_cloud.storage.local import LINK_PATH

JSON_BODY_LIMIT_BYTES = 1024 * 1024
#: Paths whose bodies are capped elsewhere, by their own (larger) limits.
_OWN_LIMITS = ("/start-task", LINK_PATH)
_MESSAGE = (
    f"The request body is larger than {JSON_BODY_LIMIT_BYTES // 1024} KiB; "
    "this operation takes a small JSON object"
)


class JsonBodyLimit:
    def __init__(self, app: ASGIApp, limit: int = JSON_BODY_LIMIT_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if scope["type"] != "http" or path.startswith(_OWN_LIMITS):
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            await self._refuse(scope, receive, send)
            return
        # Read the (small) body here, counting, then hand it on unchanged.
        messages: list[Message] = []
        received = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            received += len(message.get("body", b""))
            if received > self.limit:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        """400, counted against the caller's limit like any refusal (or the
        401 or 429 that ``count_unread`` finds instead)."""
        request = Request(scope)
        instead = await count_unread(request)
        if instead is not None:
            response = await service_error_response(request, instead)
        else:
            response = error_response(400, "BAD_REQUEST", _MESSAGE, rate_headers(request))
        response.headers["Connection"] = "close"
        await response(scope, receive, send)
