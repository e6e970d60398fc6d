"""Watching a download's body as it arrives: too slow, or shorter than promised.

httpx's read timeout is per read: a store (or a proxy in front of it) that
sends one byte every half second never trips it, and a download ran for
ever. A body that ends early without a ``Content-Length`` (chunked, or the
connection closed) was taken for the whole result. Both are told as httpx's
own transport failures, so that the client's retry loop treats them as it
does a dropped connection (retried, then ``CONNECTION_ERROR``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

#: The slowest download accepted, in bytes a second, averaged over each
#: window (see :class:`TransferGuard`): a stalled transfer, not a slow link
#: (a 1 Mbit/s line moves 125 000 bytes a second).
MIN_DOWNLOAD_RATE = 1024


class TransferGuard:
    """Counts a body's bytes: raises once a window passes with fewer than
    ``MIN_DOWNLOAD_RATE`` bytes a second over it, and at the end when the
    body is shorter than ``expected``.

    The window is the client's read timeout (60 s by default, at least 1 s):
    the time it already gives one read is now what each ``window *
    MIN_DOWNLOAD_RATE`` bytes of the transfer get. Windows follow each other
    (each starts where the last ended), so a transfer that slows to a
    trickle fails within two windows of it."""

    def __init__(
        self,
        timeout: httpx.Timeout,
        expected: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = max(1.0, timeout.read if timeout.read is not None else 60.0)
        self.expected = expected
        self.received = 0
        self._clock = clock
        self._began = clock()
        self._in_window = 0

    def took(self, count: int, request: httpx.Request) -> None:
        """``count`` more bytes arrived; raise if the window they close was too slow."""
        self.received += count
        self._in_window += count
        now = self._clock()
        if now - self._began < self.window:
            return
        least = MIN_DOWNLOAD_RATE * (now - self._began)
        if self._in_window < least:
            raise httpx.ReadTimeout(
                f"the download stalled: {self._in_window} bytes in "
                f"{now - self._began:.0f} s, under the {MIN_DOWNLOAD_RATE} bytes a second "
                "a transfer must keep up",
                request=request,
            )
        self._began, self._in_window = now, 0

    def finished(self, request: httpx.Request) -> None:
        """The body ended: raise if it is shorter than the size the task gave."""
        if self.expected is not None and self.received < self.expected:
            raise httpx.RemoteProtocolError(
                f"the download ended after {self.received} bytes; the task says the "
                f"result has {self.expected} (finalFileSize)",
                request=request,
            )


def expected_size(value: object) -> int | None:
    """A ``finalFileSize`` worth checking a body against (a positive int), or None."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None
