"""A request id on every answer and on every log line written while serving it.

An operator reading "unhandled error on POST /start-task" among a thousand
requests, or a client reporting a failed call, needs one token that ties
the two together. The caller's own ``X-Request-ID`` is kept when it is a
plain token (a proxy or the client made it, and already logs it); otherwise
one is made. It is answered in ``X-Request-ID`` and set, for log lines, in
a context variable that the worker threads of ``run_in_threadpool`` inherit.
"""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar

from starlette.datastructures import MutableHeaders
from starlette.types import Message, Receive, Scope, Send

from upscayl_cloud.api.asgi import HttpLayer

HEADER = "X-Request-ID"
#: A caller's id is kept only as a short plain token: it is written into logs.
_TOKEN = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
#: The id of the request being served; "-" outside any request.
current: ContextVar[str] = ContextVar("request_id", default="-")


def _id_of(scope: Scope) -> str:
    for name, value in scope.get("headers") or []:
        if name == b"x-request-id":
            given = value.decode("latin-1")
            if _TOKEN.match(given):
                return given
            break
    return uuid.uuid4().hex[:16]


class RequestId(HttpLayer):
    """Sets the id for the request's lifetime and adds it to the answer."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = _id_of(scope)
        token = current.set(request_id)

        async def with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, with_id)
        finally:
            current.reset(token)


class RequestIdFilter(logging.Filter):
    """Gives every record a ``request_id`` for the log format to show."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current.get()
        return True
