"""Small pieces shared by the app's own ASGI layers."""

from __future__ import annotations

from starlette.types import Message, Send


class TrackedSend:
    """A ``send`` that remembers whether the response has begun: a layer
    that answers an exception itself can do so only before that."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        self.started = self.started or message["type"] == "http.response.start"
        await self._send(message)
