"""Readiness probes shared by every caller of ``/readyz``, bounded in time.

``/readyz`` needs no key, and a probe per call against a stalled store held
one API thread each until the store timed out (45 callers starved
get-task-status and /healthz), so the probe's result is cached, at most one
runs at a time, and callers wait for it on the event loop, never longer than
the readiness timeout.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from typing import Any

from upscayl_cloud.config import StorageBackend
from upscayl_cloud.services.context import Context
from upscayl_cloud.services.health import CHECKS, check_dependencies

log = logging.getLogger(__name__)


class _Probe:
    """One probe on its own thread: its future, the checks answered so far
    and when it started."""

    def __init__(self) -> None:
        self.future: concurrent.futures.Future[dict[str, bool]] = concurrent.futures.Future()
        # Running from the start: a caller that stops waiting cancels its own
        # wrapper, which can then no longer cancel the shared probe.
        self.future.set_running_or_notify_cancel()
        self.results: dict[str, bool] = {}
        self.started = time.monotonic()


class Readiness:
    """The last probe's result, reused for ``cache_seconds``, and at most one
    probe in flight, shared by every caller.

    ``/readyz`` needs no key, and a probe per call against a slow store held
    one API thread each until the store timed out: 45 callers starved
    get-task-status and /healthz. The probe runs on its own thread; callers
    wait on the event loop (no thread each) for at most ``timeout_seconds``.

    The shared probe is a ``concurrent.futures.Future`` that each caller wraps
    on its own loop, so it belongs to no loop: one started from a loop that
    has closed since (an app restarted in-process, several test clients)
    still serves, and finishes, for callers on another. A probe older than
    ``stale_seconds`` (default ``STALE_FACTOR * timeout_seconds``) is
    abandoned, its daemon thread left to whatever it hangs on, with one
    warning, and the next caller starts a fresh one.
    """

    STALE_FACTOR = 3

    def __init__(
        self,
        ctx: Context,
        cache_seconds: float,
        timeout_seconds: float,
        stale_seconds: float | None = None,
    ) -> None:
        self.ctx = ctx
        self._cache_seconds = cache_seconds
        self._timeout_seconds = timeout_seconds
        self._stale_seconds = (
            self.STALE_FACTOR * timeout_seconds if stale_seconds is None else stale_seconds
        )
        self._last: tuple[float, dict[str, bool]] | None = None
        self._in_flight: _Probe | None = None
        self._lock = threading.Lock()

    async def checks(self) -> dict[str, bool]:
        """Database and storage checks: cached, shared, or probed now."""
        last = self._last
        if last is not None and time.monotonic() - last[0] < self._cache_seconds:
            return dict(last[1])
        probe = self._current()
        waiter = asyncio.wrap_future(probe.future)
        try:
            return dict(await asyncio.wait_for(waiter, self._timeout_seconds))
        except TimeoutError:
            answered = dict(probe.results)
            return {name: answered.get(name, False) for name in CHECKS}

    def _current(self) -> _Probe:
        """The probe in flight, or a new one when none is or it is stale."""
        with self._lock:
            probe = self._in_flight
            if probe is not None:
                age = time.monotonic() - probe.started
                if age <= self._stale_seconds:
                    return probe
                log.warning(
                    "readiness: probe started %.1f s ago has not returned; "
                    "abandoning it and probing anew",
                    age,
                )
            probe = self._in_flight = _Probe()
        threading.Thread(
            target=self._run, args=(probe,), name="readiness-probe", daemon=True
        ).start()
        return probe

    def _run(self, probe: _Probe) -> None:
        """On the probe's thread: probe, publish, let the next call probe anew."""
        try:
            check_dependencies(self.ctx, probe.results)
        finally:
            checks = {name: probe.results.get(name, False) for name in CHECKS}
            with self._lock:
                # An abandoned probe that returns late publishes nothing: a
                # newer one is in flight, or has published already.
                if self._in_flight is probe:
                    self._last = (time.monotonic(), checks)
                    self._in_flight = None
            probe.future.set_result(checks)


def readiness(state: Any, ctx: Context) -> Readiness:
    """The app's one Readiness (``state``: its ``app.state``), made on first
    use (always on the event loop: no race)."""
    readiness = getattr(state, "readiness", None)
    if readiness is None or readiness.ctx is not ctx:
        settings = ctx.settings
        timeout = settings.readiness_timeout_seconds
        # A probe still inside the store's own bound (every try waiting out
        # both S3 timeouts) returns by itself: abandoning it earlier would
        # only add connections to a frozen store.
        stale = Readiness.STALE_FACTOR * timeout
        if settings.storage_backend is StorageBackend.s3:
            per_try = settings.s3_connect_timeout_seconds + settings.s3_read_timeout_seconds
            stale += per_try * settings.s3_max_attempts
        readiness = Readiness(ctx, settings.readiness_cache_seconds, timeout, stale)
        state.readiness = readiness
    return readiness
