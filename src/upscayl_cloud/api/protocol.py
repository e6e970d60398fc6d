"""uvicorn's HTTP/1.1 protocol (h11) with deadlines on slow clients.

uvicorn times out only an idle keep-alive connection *between* requests; a
client that opens a connection and sends a request's headers slowly, or
never finishes them, or trickles its body, or never reads its answer, holds
its socket forever. A thousand such connections use up the process's file
descriptors (the usual limit is 1024) and nobody else is answered; uvicorn
then logs the accept error in a tight loop. So here:

- every request's headers must arrive within ``header_timeout`` seconds of
  the connection, or of the previous request's end (its answer, or the end
  of a body the app answered early without reading), else the connection is
  closed;
- a body that stops arriving for ``body_idle_timeout`` seconds (a client
  gone silent mid-upload) is answered 408 and the connection closed;
- a body that keeps trickling must have brought ``min_body_rate`` bytes for
  every second past its first ``body_rate_grace`` seconds, else it is
  answered 408 too. Holding a connection then costs a client real
  bandwidth, a kilobyte a second each, instead of a byte a minute. The
  count runs from the body's start, so a fast upload that stalls for a
  while (a phone changing networks) keeps the credit it earned; this is
  Kestrel's ``MinRequestBodyDataRate``, with a less lenient rate since
  every body here is an image or a small JSON object. Unlike Kestrel's,
  the credit is kept for at most ``body_rate_credit`` seconds ahead (a
  leaky bucket): counted from the start alone, 8 MiB sent at once bought
  over two hours of trickling a byte a minute, on each of any number of
  connections. A stall the idle deadline allows never runs out of it;
- an answer the client stops reading for ``write_stall_timeout`` seconds
  (its buffers full) is dropped and the connection aborted. Writing resumes
  only once about 48 KiB of the buffer drained, so this also asks a reader
  for some 800 bytes a second.

Time the server makes the client wait does not count: while uvicorn has
paused reading until the app takes what came, or a client that sent
``Expect: 100-continue`` waits for the app to ask for the body, neither
body deadline runs out.

The 408 is written here, not by the app (which is still waiting for the
body): in the spec's error shape, with ``Connection: close`` (and, for a
page on an origin of ``UPSCAYL_CORS_ORIGINS``, the header that lets it read
the answer); the app's ``receive()`` gets ``http.disconnect`` and whatever
it was writing is dropped (``errors._client_gone``). A request already answered is only
closed. Closing at once while the client is still sending would make the
kernel reset the connection, which can destroy the 408 before the client
reads it, so the server first stops writing and discards what still comes
for ``linger_seconds`` (nginx's lingering close).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import h11
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from upscayl_cloud.api.cors import allowed_origin
from upscayl_cloud.api.requestid import HEADER as REQUEST_ID_HEADER
from upscayl_cloud.api.requestid import id_of, logging_as, new_id

log = logging.getLogger(__name__)

#: The answer to a request that is not valid HTTP/1.1 (h11 gives no detail).
MALFORMED_HTTP_MESSAGE = (
    "The request is not valid HTTP/1.1 (a malformed request line or header, or more "
    "than one Content-Length): send it with an HTTP client library"
)

#: Seconds a client has to send a request's headers (a real client sends
#: them at once; slow links need a few seconds at most).
HEADER_TIMEOUT_SECONDS = 15.0

#: Seconds a request body may stop arriving before it is refused.
BODY_IDLE_TIMEOUT_SECONDS = 60.0

#: The bytes a second a request body must bring on average (8 kbit/s: a
#: 1 MB photo in 17 minutes).
MIN_BODY_BYTES_PER_SECOND = 1024

#: Seconds at the start of a body before its rate counts (TCP's slow start,
#: a phone waking its radio).
BODY_RATE_GRACE_SECONDS = 10.0

#: The most seconds of credit a body may bank by arriving faster than the
#: minimum: as long as the idle deadline, so a fast upload survives any
#: stall that deadline allows, and no longer.
BODY_RATE_CREDIT_SECONDS = BODY_IDLE_TIMEOUT_SECONDS

#: Seconds an answer may wait for the client to read before it is dropped.
WRITE_STALL_TIMEOUT_SECONDS = 60.0

#: Seconds a refused client's further bytes are read and discarded before
#: the connection is closed, so that its 408 is not lost to a reset.
LINGER_SECONDS = 2.0


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
    body_rate_credit: float = BODY_RATE_CREDIT_SECONDS
    write_stall_timeout: float = WRITE_STALL_TIMEOUT_SECONDS
    linger_seconds: float = LINGER_SECONDS
    #: UPSCAYL_CORS_ORIGINS: a page on one of them can read its 408 too.
    cors_origins: tuple[str, ...] = ()

    @classmethod
    def for_origins(cls, origins: Sequence[str]) -> type[DeadlineH11Protocol]:
        """This protocol, its 408s readable by pages on ``origins``."""
        if not origins:
            return cls
        return type(cls.__name__, (cls,), {"cors_origins": tuple(origins)})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        #: The request after which the next one's headers are awaited.
        self._waiting_after: object = None
        #: A request answered before its body was in: the header deadline
        #: starts once that body has been read (and discarded).
        self._arm_after_body: object = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._rate_timer: asyncio.TimerHandle | None = None
        #: The request whose body is being timed, when it began, the paused
        #: time before it, its bytes so far and when the last ones came.
        self._body_cycle: object = None
        self._body_since = 0.0
        self._body_paused_before = 0.0
        self._body_bytes = 0
        self._body_last = 0.0
        #: When, in the client's time (ours less the paused time), the body
        #: falls behind the minimum rate unless more arrives.
        self._credit_until = 0.0
        self._write_timer: asyncio.TimerHandle | None = None
        self._lingering = False

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
        """A new request's headers have arrived once uvicorn made a new cycle;
        an early-answered request's body has ended once h11 stops reading it."""
        if self._header_timer is not None and self.cycle is not self._waiting_after:
            self._disarm()
        answered = self._arm_after_body
        if answered is not None and self.conn.their_state is not h11.SEND_BODY:
            self._arm_after_body = None
            if self.cycle is answered and not self.transport.is_closing():
                self._arm()

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
        """The request whose body is still on its way, if any (h11 knows:
        ``cycle.more_body`` stays set for a body the app answered early)."""
        cycle = self.cycle
        if (
            cycle is None
            or self._lingering
            or self.transport.is_closing()
            or self.conn.their_state is not h11.SEND_BODY
        ):
            return None
        return cycle

    def _clock_body(self, cycle: RequestResponseCycle) -> None:
        """Start timing this request's body from now, crediting the bytes
        that came with its headers."""
        self._body_cycle = cycle
        self._body_since = self._body_last = self.loop.time()
        self._body_paused_before = self._timed_flow.paused_seconds()
        self._body_bytes = 0
        self._credit_until = self._client_time() + self.body_rate_grace
        self._earn(len(cycle.body))

    def _client_time(self) -> float:
        """Our clock less the time reading was paused: the time the client
        could have sent in."""
        return self.loop.time() - self._timed_flow.paused_seconds()

    def _earn(self, received: int) -> None:
        """Credit ``received`` bytes: each brings ``1 / min_body_rate``
        seconds more, up to ``body_rate_credit`` seconds ahead of now (never
        cutting into the start's grace)."""
        self._body_bytes += received
        ceiling = self._client_time() + max(self.body_rate_credit, self.body_rate_grace)
        self._credit_until = min(self._credit_until + received / self.min_body_rate, ceiling)

    def _track_body(self, received: int) -> None:
        """Count what arrived for the body on its way (a new body starts its
        own clocks), and restart its idle deadline."""
        cycle = self._body_arriving()
        if cycle is not None and self._body_cycle is not cycle:
            if cycle.waiting_for_100_continue:
                # It sends nothing until the app asks for the body (uvicorn
                # then says 100 Continue and resumes reading): our wait.
                self.flow.pause_reading()
            self._clock_body(cycle)
            self._reschedule_rate_check(cycle)
        elif cycle is not None and received:
            self._earn(received)
            self._body_last = self.loop.time()
        self._watch_body()

    def _client_idle_since(self) -> float:
        """Since its last bytes, or since we last let it send (a pause ended)."""
        return max(self._body_last, self._timed_flow.resumed_at)

    def _paused_in_body(self) -> float:
        """Seconds this body's reading has been paused by us so far."""
        return self._timed_flow.paused_seconds() - self._body_paused_before

    def _watch_body(self) -> None:
        """(Re)start the idle deadline while a body is still arriving; stop
        it once the body is complete."""
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
        due = self._client_idle_since() + self.body_idle_timeout
        paused = self._timed_flow.read_paused
        if paused or self.loop.time() < due:
            when = self.loop.time() + self.body_idle_timeout if paused else due
            self._body_timer = self.loop.call_at(when, self._body_stalled, cycle)
            return
        seconds = f"{self.body_idle_timeout:g}"
        self._refuse_body(cycle, f"The request body stopped arriving for {seconds} s")

    def _rate_due(self) -> float:
        """When the body falls behind the minimum rate unless more arrives
        (on our clock: later by any time reading is paused from now)."""
        return self._credit_until + self._timed_flow.paused_seconds()

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
        rate = self._body_bytes / max(now - self._body_since - self._paused_in_body(), 1e-9)
        silent = now - self._client_idle_since()
        lately = f" (nothing for the last {silent:.0f} s)" if silent >= 1 else ""
        if rate < self.min_body_rate:
            message = (
                f"The request body arrived at {rate:.0f} bytes a second{lately}; this "
                f"server needs at least {self.min_body_rate:g} on average (after the "
                f"first {self.body_rate_grace:g} s)"
            )
        else:  # fast at first, then too slow for longer than its credit lasts
            message = (
                f"The request body slowed to under {self.min_body_rate:g} bytes a "
                f"second{lately}; this server needs at least that, and counts what came "
                f"faster before for at most {self.body_rate_credit:g} s"
            )
        self._refuse_body(cycle, message)

    def _refuse_body(self, cycle: RequestResponseCycle, message: str) -> None:
        """Answer 408 in the spec's error shape, while the app is still
        waiting for the body, and close; a request already answered is only
        closed. Its log lines carry the request's id, and the answer too,
        as the app's own answers do."""
        request_id = id_of(cycle.scope)
        with logging_as(request_id):
            log.warning(
                "408 for %s %s from %s: %s",
                cycle.scope["method"],
                cycle.scope["path"],
                self.client[0] if self.client else "?",
                message,
            )
        try:
            if not cycle.response_started and self.conn.our_state is h11.SEND_RESPONSE:
                cycle.response_started = True
                # Logged before it is written, as uvicorn logs its own: a
                # client reading the answer must find the line already there.
                self._log_access(cycle.scope, 408, request_id)
                self._write_408(cycle, message, request_id)
        except h11.LocalProtocolError as exc:  # h11 refused the answer: close anyway
            log.warning("could not write the 408: %s", exc)
        finally:
            cycle.disconnected = True  # the app's receive() gets http.disconnect
            cycle.message_event.set()
            self._linger()

    def _log_access(self, scope: dict[str, Any], status: int, request_id: str) -> None:
        """The access line uvicorn writes for the app's answers, for one
        written here."""
        if self.access_log:
            with logging_as(request_id):
                self.access_logger.info(
                    '%s - "%s %s HTTP/%s" %d',
                    get_client_addr(scope),
                    scope["method"],
                    get_path_with_query_string(scope),
                    scope["http_version"],
                    status,
                )

    def _write_408(self, cycle: RequestResponseCycle, message: str, request_id: str) -> None:
        body = json.dumps({"error": "REQUEST_TIMEOUT", "message": message}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            (REQUEST_ID_HEADER.lower().encode(), request_id.encode()),
        ]
        if self.cors_origins:  # as ApiCors would answer this request
            origin = dict(cycle.scope["headers"]).get(b"origin")
            allowed = allowed_origin(origin and origin.decode("latin-1"), self.cors_origins)
            if allowed is not None:
                headers.append((b"access-control-allow-origin", allowed.encode("latin-1")))
            headers.append((b"vary", b"Origin"))
        head_only = cycle.scope["method"] == "HEAD"  # an answer to HEAD has no body
        self.transport.write(
            self.conn.send(h11.Response(status_code=408, headers=headers))
            + self.conn.send(h11.Data(data=b"" if head_only else body))
            + self.conn.send(h11.EndOfMessage())
        )

    def send_400_response(self, msg: str) -> None:
        """What h11 cannot parse (two ``Content-Length`` headers, a negative
        one, a malformed request line or header), in the spec's error shape:
        uvicorn wrote it as plain text, which no client of ours reads. No
        request was understood, so its id is a new one, logged with the
        caller's address (uvicorn's own line before it, "Invalid HTTP
        request received.", has neither); no access line, as there is no
        method or path to write one with."""
        request_id = new_id()
        with logging_as(request_id):
            log.warning(
                "400 for a malformed request from %s", self.client[0] if self.client else "?"
            )
        body = json.dumps({"error": "BAD_REQUEST", "message": MALFORMED_HTTP_MESSAGE}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            (REQUEST_ID_HEADER.lower().encode(), request_id.encode()),
        ]
        # An answer already begun (h11 refuses another): nothing more can be said.
        with contextlib.suppress(h11.LocalProtocolError):
            self.transport.write(
                self.conn.send(h11.Response(status_code=400, headers=headers))
                + self.conn.send(h11.Data(data=body))
                + self.conn.send(h11.EndOfMessage())
            )
        self.transport.close()

    def _linger(self) -> None:
        """Stop writing, read and discard for ``linger_seconds``, then close."""
        self._lingering = True
        self._cancel_timers()
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(self.linger_seconds, self._close_after_linger)

    def _cancel_timers(self, including_write: bool = False) -> None:
        """Stop the body's deadlines (and the answer's, when asked)."""
        for timer in (self._body_timer, self._rate_timer):
            if timer is not None:
                timer.cancel()
        self._body_timer = self._rate_timer = None
        if including_write and self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _close_after_linger(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    # Answers ---------------------------------------------------------------

    def _write_stalled(self) -> None:
        self._write_timer = None
        log.warning(
            "dropped an answer to %s: not read for %g s",
            self.client[0] if self.client else "?",
            self.write_stall_timeout,
        )
        self.transport.abort()  # close() would wait for the client to read

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.write_stall_timeout, self._write_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    # uvicorn's events ------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = _TimedFlowControl(transport, self.loop.time)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # a refused client's further bytes: discarded
        super().data_received(data)
        self._check_started()
        self._track_body(len(data))

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            if self.conn.their_state is h11.SEND_BODY:
                self._arm_after_body = self.cycle  # answered early: body still coming
            else:
                self._arm()  # the next request on this connection gets its own deadline
        super().on_response_complete()  # may start a pipelined request at once
        self._check_started()
        self._track_body(0)  # ... whose body is then timed from here

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._cancel_timers(including_write=True)
        super().connection_lost(exc)
