"""uvicorn's HTTP/1.1 protocol (h11) with deadlines on slow clients.

uvicorn times out only an idle keep-alive connection *between* requests; a
client that opens a connection and sends a request's headers slowly, or
never finishes them, holds its socket forever (and any further bytes cancel
the keep-alive timer too). A thousand such connections use up the process's
file descriptors (the usual limit is 1024) and nobody else is answered;
uvicorn then logs the accept error in a tight loop. So here:

- every request's headers must arrive within ``header_timeout`` seconds of
  the connection (or of the previous response on a kept-alive one), else
  the connection is closed;
- a body that stops arriving for ``body_idle_timeout`` seconds (a client
  gone silent mid-upload) is answered 408 and the connection closed;
- a body that keeps trickling must still average ``min_body_rate`` bytes a
  second once its first ``body_rate_grace`` seconds are over, else it is
  answered 408 too. Holding a connection then costs a client real
  bandwidth, a kilobyte a second each, instead of a byte a minute. The
  average runs from the body's start, so a fast upload that stalls for a
  while (a phone changing networks) keeps the credit it earned; this is
  Kestrel's ``MinRequestBodyDataRate``, with a less lenient rate since
  every body here is an image or a small JSON object.

Time the server makes the client wait does not count: while uvicorn has
paused reading until the app takes what came, or a client that sent
``Expect: 100-continue`` waits for the app to ask for the body, neither
deadline runs out.

The 408 is written here, not by the app (which is still waiting for the
body): in the spec's error shape, with ``Connection: close``; the app's
``receive()`` gets ``http.disconnect`` and whatever it was writing is
dropped (``errors._client_gone``). A request already answered is simply
closed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle

log = logging.getLogger(__name__)

#: Seconds a client has to send a request's headers (a real client sends
#: them at once; slow links need a few seconds at most).
HEADER_TIMEOUT_SECONDS = 15.0

#: Seconds a request body may stop arriving before it is refused.
BODY_IDLE_TIMEOUT_SECONDS = 60.0

#: The slowest average a request body may arrive at, in bytes a second
#: (8 kbit/s: a 1 MB photo in 17 minutes).
MIN_BODY_BYTES_PER_SECOND = 1024

#: Seconds at the start of a body before its rate counts (TCP's slow start,
#: a phone waking its radio).
BODY_RATE_GRACE_SECONDS = 10.0


class _TimedFlowControl(FlowControl):
    """uvicorn's flow control, also keeping how long reading has been paused
    (the app had not taken what came): time the client is not to blame for."""

    def __init__(self, transport: asyncio.Transport, clock: Callable[[], float]) -> None:
        super().__init__(transport)
        self._clock = clock
        self._paused_at = 0.0
        self._paused_before = 0.0
        #: When reading last resumed after a pause (0: never paused).
        self.resumed_at = 0.0

    def pause_reading(self) -> None:
        if not self.read_paused:
            self._paused_at = self._clock()
        super().pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.resumed_at = self._clock()
            self._paused_before += self.resumed_at - self._paused_at
        super().resume_reading()

    def paused_seconds(self) -> float:
        """Seconds reading has been paused in all, so far."""
        now = self._clock()
        return self._paused_before + (now - self._paused_at if self.read_paused else 0.0)


class DeadlineH11Protocol(H11Protocol):
    header_timeout: float = HEADER_TIMEOUT_SECONDS
    body_idle_timeout: float = BODY_IDLE_TIMEOUT_SECONDS
    min_body_rate: float = MIN_BODY_BYTES_PER_SECOND
    body_rate_grace: float = BODY_RATE_GRACE_SECONDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._waiting_after: object = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._rate_timer: asyncio.TimerHandle | None = None
        #: The request whose body is being timed, when it began, the paused
        #: time before it, its bytes so far and when the last ones came.
        self._body_cycle: object = None
        self._body_since = 0.0
        self._body_paused_before = 0.0
        self._body_bytes = 0
        self._body_last = 0.0

    # Headers ---------------------------------------------------------------

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

    # Bodies ----------------------------------------------------------------

    @property
    def _timed_flow(self) -> _TimedFlowControl:
        assert isinstance(self.flow, _TimedFlowControl)
        return self.flow

    def _body_arriving(self) -> RequestResponseCycle | None:
        """The request whose body is still on its way, if any."""
        cycle = self.cycle
        if cycle is None or not cycle.more_body or self.transport.is_closing():
            return None
        return cycle

    def _clock_body(self, cycle: RequestResponseCycle) -> None:
        """Start timing this request's body from now."""
        self._body_cycle = cycle
        self._body_since = self._body_last = self.loop.time()
        self._body_paused_before = self._timed_flow.paused_seconds()
        self._body_bytes = 0

    def _count_body(self, data: bytes) -> None:
        """Add what arrived to the current body's tally; a new body starts
        its own clocks (its first bytes, sent with the headers, are free)."""
        cycle = self._body_arriving()
        if cycle is None:
            return
        if self._body_cycle is not cycle:
            if cycle.waiting_for_100_continue:
                # It sends nothing until the app asks for the body (uvicorn
                # then says 100 Continue and resumes reading): our wait.
                self.flow.pause_reading()
            self._clock_body(cycle)
            self._reschedule_rate_check(cycle)
        else:
            self._body_bytes += len(data)
            self._body_last = self.loop.time()

    def _watch_body(self) -> None:
        """(Re)start the idle deadline while this request's body is still
        arriving; stop it once the body is complete."""
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        cycle = self._body_arriving()
        if cycle is not None:
            self._body_timer = self.loop.call_later(
                self.body_idle_timeout, self._body_stalled, cycle
            )

    def _body_stalled(self, cycle: RequestResponseCycle) -> None:
        self._body_timer = None
        if self._body_arriving() is not cycle:
            return
        # The client is idle since its last bytes or since we last let it send.
        idle_since = max(self._body_last, self._timed_flow.resumed_at)
        due = idle_since + self.body_idle_timeout
        paused = self._timed_flow.read_paused
        if paused or self.loop.time() < due:
            when = self.loop.time() + self.body_idle_timeout if paused else due
            self._body_timer = self.loop.call_at(when, self._body_stalled, cycle)
            return
        seconds = f"{self.body_idle_timeout:g}"
        self._refuse_body(cycle, f"The request body stopped arriving for {seconds} s")

    def _rate_due(self) -> float:
        """When the average falls below the minimum unless more arrives."""
        paused = self._timed_flow.paused_seconds() - self._body_paused_before
        earned = self._body_bytes / self.min_body_rate
        return self._body_since + paused + self.body_rate_grace + earned

    def _reschedule_rate_check(self, cycle: RequestResponseCycle) -> None:
        if self._rate_timer is not None:
            self._rate_timer.cancel()
        when = self._rate_due()
        if self._timed_flow.read_paused:  # the deadline moves while paused
            when = max(when, self.loop.time() + self.body_rate_grace)
        self._rate_timer = self.loop.call_at(when, self._check_rate, cycle)

    def _check_rate(self, cycle: RequestResponseCycle) -> None:
        self._rate_timer = None
        if self._body_arriving() is not cycle:
            return
        now = self.loop.time()
        if self._timed_flow.read_paused or now < self._rate_due():
            self._reschedule_rate_check(cycle)
            return
        paused = self._timed_flow.paused_seconds() - self._body_paused_before
        rate = self._body_bytes / max(now - self._body_since - paused, 1e-9)
        silent = now - max(self._body_last, self._timed_flow.resumed_at)
        lately = f" (nothing for the last {silent:.0f} s)" if silent >= 1 else ""
        self._refuse_body(
            cycle,
            f"The request body arrived at {rate:.0f} bytes a second{lately}; this "
            f"server needs at least {self.min_body_rate:g} on average (after the "
            f"first {self.body_rate_grace:g} s)",
        )

    def _refuse_body(self, cycle: RequestResponseCycle, message: str) -> None:
        """Answer 408 in the spec's error shape and close, while the app is
        still waiting for the body; a request already answered is closed."""
        log.warning(
            "408 for %s %s from %s: %s",
            cycle.scope["method"],
            cycle.scope["path"],
            self.client[0] if self.client else "?",
            message,
        )
        if not cycle.response_started and self.conn.our_state is h11.SEND_RESPONSE:
            cycle.response_started = True
            body = json.dumps({"error": "REQUEST_TIMEOUT", "message": message}).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ]
            self.transport.write(
                self.conn.send(h11.Response(status_code=408, headers=headers))
                + self.conn.send(h11.Data(data=body))
                + self.conn.send(h11.EndOfMessage())
            )
        cycle.disconnected = True  # the app's receive() gets http.disconnect
        cycle.message_event.set()
        self.transport.close()

    # uvicorn's events ------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = _TimedFlowControl(transport, self.loop.time)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._check_started()
        self._count_body(data)
        self._watch_body()

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self._arm()  # the next request on this connection gets its own deadline
        super().on_response_complete()  # may start a pipelined request at once
        self._check_started()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        for timer in (self._body_timer, self._rate_timer):
            if timer is not None:
                timer.cancel()
        self._body_timer = self._rate_timer = None
        super().connection_lost(exc)
