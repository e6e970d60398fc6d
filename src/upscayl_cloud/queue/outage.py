"""A worker pool's claims through a database outage: few log lines, slower polls.

Every idle worker thread asks the database for a task every
``UPSCAYL_POLL_INTERVAL_SECONDS`` (0.5 s by default). While the database is
down each ask fails, and logging each failure wrote two lines a second per
thread, a flood in the middle of a failover. The pool's threads share one
``ClaimOutage``: one warning when claims start failing, a reminder a
minute, one line when they succeed again. Meanwhile the polls back off with
the outage's length (a tenth of it, at most ``OUTAGE_MAX_POLL_SECONDS``), so
a database coming back is not met by every worker at once, and a short
blip costs no more than a few seconds of waiting.

A busy worker thread's heartbeat renews its task's lease every second
(``worker.Heartbeat``), and logged each failed renewal: another line a
second per busy thread. Each heartbeat has a ``RenewalOutage``: one warning
when its renewals start failing, a reminder a minute, one line when one
succeeds again. Its beats keep their pace: the lease is what they save.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

#: Seconds between two "still unreachable" lines.
OUTAGE_REMINDER_SECONDS = 60.0
#: The longest wait between two claims while the database is down.
OUTAGE_MAX_POLL_SECONDS = 5.0


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0]


class _FailureRun:
    """A run of failures: when it began, how many, and when it was last told;
    what to say is its users' (one for claims, one per heartbeat)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.since: float | None = None
        self._reminded = 0.0
        self.failures = 0

    def failed(self) -> str | None:
        """Count one failure; "first" when it starts a run, "remind" when a
        reminder is due, else None (nothing to say)."""
        now = self._clock()
        self.failures += 1
        if self.since is None:
            self.since = self._reminded = now
            return "first"
        if now - self._reminded >= OUTAGE_REMINDER_SECONDS:
            self._reminded = now
            return "remind"
        return None

    def length(self) -> float:
        return 0.0 if self.since is None else self._clock() - self.since

    def end(self) -> tuple[float, int] | None:
        """End the run: its length and failures, or None if there was none."""
        if self.since is None:
            return None
        ended = (self.length(), self.failures)
        self.since, self.failures = None, 0
        return ended


class ClaimOutage:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._run = _FailureRun(clock)

    def failed(self, error: BaseException, poll_interval: float) -> float:
        """Note a claim that could not reach the database; returns the
        seconds to wait before the next one."""
        with self._lock:
            said = self._run.failed()
            if said == "first":
                log.warning(
                    "claims failed: the database cannot be reached (%s); "
                    "retrying, with a reminder a minute",
                    _first_line(error),
                )
            elif said == "remind":
                log.warning(
                    "the database is still unreachable after %.0f s (%d failed claims): %s",
                    self._run.length(),
                    self._run.failures,
                    _first_line(error),
                )
            down = self._run.length()
        return min(OUTAGE_MAX_POLL_SECONDS, max(poll_interval, down / 10))

    def recovered(self) -> None:
        """A claim reached the database (cheap when there was no outage)."""
        with self._lock:
            ended = self._run.end()
        if ended is not None:
            log.warning("the database is reachable again after %.0f s (%d failed claims)", *ended)


class RenewalOutage:
    """One heartbeat's failed lease renewals, told once per run of them
    (used by its own thread only: no lock)."""

    def __init__(self, task_id: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._task_id = task_id
        self._run = _FailureRun(clock)

    def failed(self, error: BaseException) -> None:
        """Note a renewal that raised (the database unreachable or busy)."""
        said = self._run.failed()
        if said == "first":
            log.warning(
                "lease renewal failed for task %s (%s); retrying every beat, "
                "with a reminder a minute",
                self._task_id,
                _first_line(error),
            )
        elif said == "remind":
            log.warning(
                "lease renewals for task %s still failing after %.0f s (%d failed): %s",
                self._task_id,
                self._run.length(),
                self._run.failures,
                _first_line(error),
            )

    def recovered(self) -> None:
        """A renewal reached the database (cheap when none had failed)."""
        ended = self._run.end()
        if ended is not None:
            log.info(
                "lease renewal for task %s succeeded again after %.0f s (%d failed)",
                self._task_id,
                *ended,
            )
