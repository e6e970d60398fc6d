"""A request id on every answer and on every log line written while serving it.

An operator reading "unhandled error on POST /start-task" among a thousand
requests, or a client reporting a failed call, needs one token that ties
the two together. The caller's own ``X-Request-ID`` is kept when it is a
plain token (a proxy or the client made it, and already logs it); otherwise
one is made. It is answered in ``X-Request-ID`` and set, for log lines, in
a context variable that the worker threads of ``run_in_threadpool`` inherit,
and kept in the scope, where the HTTP protocol finds it for the answers it
writes itself (a 408 while the app waits for the body: api/protocol.py).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from starlette.datastructures import MutableHeaders
from starlette.types import Message, Receive, Scope, Send

from upscayl_cloud.api.asgi import HttpLayer

HEADER = "X-Request-ID"
#: A caller's id is kept only as a short plain token: it is written into logs.
_TOKEN = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
#: The id of the request being served; "-" outside any request.
current: ContextVar[str] = ContextVar("request_id", default="-")
#: Where the id is kept in the request's scope.
SCOPE_KEY = "upscayl.request_id"


def new_id() -> str:
    return uuid.uuid4().hex[:16]


def id_of(scope: Scope) -> str:
    """The request's id: the one already given to it, else the caller's
    (a plain token), else a new one."""
    if given := scope.get(SCOPE_KEY):
        return str(given)
    for name, value in scope.get("headers") or []:
        if name == b"x-request-id":
            given = value.decode("latin-1")
            if _TOKEN.match(given):
                return given
            break
    return new_id()


@contextmanager
def logging_as(request_id: str) -> Iterator[None]:
    """Lines logged inside show ``request_id`` (for code that runs outside
    the request's own task: the protocol's timers)."""
    token = current.set(request_id)
    try:
        yield
    finally:
        current.reset(token)


class RequestId(HttpLayer):
    """Sets the id for the request's lifetime and adds it to the answer."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = id_of(scope)
        scope[SCOPE_KEY] = request_id
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
