"""Small pieces shared by the app's own ASGI layers."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class TrackedSend:
    """A ``send`` that remembers whether the response has begun: a layer
    that answers an exception itself can do so only before that."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        self.started = self.started or message["type"] == "http.response.start"
        await self._send(message)


class HttpLayer:
    """An ASGI layer that acts on HTTP requests (:meth:`handle`) and passes
    every other scope (lifespan, websockets) through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError
