"""Real stores that fail the way a dead or frozen S3 does, on loopback.

``closed_endpoint``: a port nobody listens on (connection refused, at once).
``FrozenStore``: a TCP server that accepts connections and never answers, as
a SIGSTOPped SeaweedFS does (the kernel completes the handshake, nobody
reads): what read timeouts are for. It counts the connections it accepted,
so a test can tell how many calls reached the store, and can drop them, so
that a test need not wait out a read timeout.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType


def closed_endpoint() -> str:
    """``http://127.0.0.1:<port>`` of a port just freed: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class FrozenStore:
    """Accepts every connection, reads nothing, answers nothing."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0), backlog=128)
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._held)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:  # closed by __exit__
                return
            with self._lock:
                self._held.append(conn)

    def drop(self) -> None:
        """Close every connection accepted so far (they still count): whatever
        waits on one gets its answer, a closed connection, now."""
        with self._lock:
            for conn in self._held:
                conn.close()

    def __enter__(self) -> FrozenStore:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.close()
        with self._lock:
            for conn in self._held:
                conn.close()
