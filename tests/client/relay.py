"""Stand-ins for answers the real server never gives, kept as thin as possible.

:class:`Relay` sits in front of the real server and forwards every request
unchanged; a test's ``edit`` may change one answer (a server that lists
results under other names, one that answers a repeated completion 400).
:class:`StandIn` is a bare HTTP server for what no proxy of ours can make
the real server do: a body that trickles, that does not decode, that ends
early, or a link that redirects.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import httpx


@dataclass
class Reply:
    """An answer a stand-in gives instead of the real server's."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, body: object) -> Reply:
        return cls(status, json.dumps(body).encode(), {"Content-Type": "application/json"})


@dataclass
class Seen:
    """A request the relay received (and what it would forward)."""

    method: str
    path: str
    body: bytes
    headers: dict[str, str]


#: ``edit(seen, forward)``: the answer to give; ``forward()`` asks the real
#: server (once) and returns its answer, which may be returned as it is.
Edit = Callable[[Seen, Callable[[], httpx.Response]], "httpx.Response | Reply"]


def _unchanged(seen: Seen, forward: Callable[[], httpx.Response]) -> httpx.Response | Reply:
    return forward()


class LoopbackHTTP:
    """An ``http.server`` on a free loopback port, served on a daemon thread
    while entered: what the stand-in servers below share."""

    def _listen(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._closed()

    def _closed(self) -> None:
        """What a subclass releases once its server has stopped."""


class Relay(LoopbackHTTP):
    """A loopback proxy in front of ``upstream`` (the real server): the
    stand-in is only what ``edit`` changes. ``seen`` lists every request."""

    def __init__(self, upstream: str, edit: Edit = _unchanged) -> None:
        self.upstream, self.edit = upstream, edit
        self.seen: list[Seen] = []
        self._http = httpx.Client(timeout=30)
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                sent = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                keep = ("X-API-Key", "Content-Type")
                headers = {h: self.headers[h] for h in keep if self.headers.get(h)}
                seen = Seen(self.command, self.path, sent, headers)
                relay.seen.append(seen)

                def forward() -> httpx.Response:
                    return relay._http.request(
                        self.command, relay.upstream + self.path, content=sent, headers=headers
                    )

                answer = relay.edit(seen, forward)
                if isinstance(answer, httpx.Response):
                    kept = {
                        name: answer.headers[name]
                        for name in ("Content-Type", "Retry-After", "ETag")
                        if name in answer.headers
                    }
                    answer = Reply(answer.status_code, answer.content, kept)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            do_GET = do_POST = do_PUT = _any  # noqa: N815 (http.server's names)

            def log_message(self, *args: object) -> None:
                pass

        self._listen(Handler)

    def _closed(self) -> None:
        self._http.close()


def edit_json(answer: httpx.Response, change: Callable[[dict[str, Any]], None]) -> Reply:
    """``answer`` (a JSON object) with ``change`` applied to it."""
    body = answer.json()
    change(body)
    return Reply.json(answer.status_code, body)


class StandIn(LoopbackHTTP):
    """A bare HTTP server whose GETs ``answer(handler)`` writes in full
    (status line, headers, body); it records each GET's headers."""

    def __init__(self, answer: Callable[[BaseHTTPRequestHandler], None]) -> None:
        self.headers: list[dict[str, str]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stand_in.headers.append(dict(self.headers.items()))
                answer(self)

            def log_message(self, *args: object) -> None:
                pass

        self._listen(Handler)


def undecodable(handler: BaseHTTPRequestHandler) -> None:
    """A body that says it is gzip and is not."""
    body = b"this is not gzip at all"
    handler.send_response(200)
    handler.send_header("Content-Encoding", "gzip")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
