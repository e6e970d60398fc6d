"""uvicorn's HTTP/1.1 protocol (h11) with a deadline on request headers.

uvicorn times out only an idle keep-alive connection *between* requests; a
client that opens a connection and sends a request's headers slowly, or
never finishes them, holds its socket forever (and any further bytes cancel
the keep-alive timer too). A thousand such connections use up the process's
file descriptors (the usual limit is 1024) and nobody else is answered;
uvicorn then logs the accept error in a tight loop. Here every request's
headers must arrive within ``header_timeout`` seconds of the connection (or
of the previous response on a kept-alive connection), else the connection
is closed. A body may take as long as it needs, as long as it keeps coming:
one that stops arriving for ``body_idle_timeout`` seconds (a client gone
silent mid-upload) closes the connection too, unless the wait is ours
(uvicorn paused reading until the app takes what it has).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

#: Seconds a client has to send a request's headers (a real client sends
#: them at once; slow links need a few seconds at most).
HEADER_TIMEOUT_SECONDS = 15.0

#: Seconds a request body may stop arriving before the connection is closed.
BODY_IDLE_TIMEOUT_SECONDS = 60.0


class HeaderTimeoutH11Protocol(H11Protocol):
    header_timeout: float = HEADER_TIMEOUT_SECONDS
    body_idle_timeout: float = BODY_IDLE_TIMEOUT_SECONDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._waiting_after: object = None
        self._body_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._waiting_after = self.cycle
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _check_started(self) -> None:
        """A new request's headers have arrived once uvicorn made a new cycle."""
        if self._header_timer is not None and self.cycle is not self._waiting_after:
            self._disarm()

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.cycle is self._waiting_after and not self.transport.is_closing():
            self.transport.close()

    def _watch_body(self) -> None:
        """(Re)start the idle deadline while this request's body is still
        arriving; stop it once the body is complete."""
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        cycle = self.cycle
        if cycle is not None and cycle.more_body and not self.transport.is_closing():
            self._body_timer = self.loop.call_later(
                self.body_idle_timeout, self._body_stalled, cycle
            )

    def _body_stalled(self, cycle: object) -> None:
        self._body_timer = None
        if self.cycle is not cycle or not getattr(cycle, "more_body", False):
            return
        if self.flow.read_paused:  # the app has not taken what came: our wait
            self._watch_body()
        elif not self.transport.is_closing():
            self.transport.close()  # the app's receive() gets http.disconnect

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._check_started()
        self._watch_body()

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self._arm()  # the next request on this connection gets its own deadline
        super().on_response_complete()  # may start a pipelined request at once
        self._check_started()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().connection_lost(exc)
