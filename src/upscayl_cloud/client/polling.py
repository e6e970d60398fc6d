"""How often to ask for a task's status.

``get-task-status`` is rate limited (the spec: 100 per hour per key), and the
limit is shared by every task the key polls. Polling one task every 5 s is
720 an hour, so a long batch used to lock itself out of its own status within
minutes. Polls start quick (small images finish in a second) and slow down
geometrically to ``maximum``; on top of that, every poll of a client draws
from one :class:`PollBudget`, which keeps all its polls together within the
hourly limit (a short burst for the quick start, then an even rate), however
many tasks are running. ``upscale()`` watches a run of several tasks through
history pages, which have a limit and a budget of their own
(:mod:`upscayl_cloud.client.sweep`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeGuard

#: The spec's ``x-rateLimit`` of get-task-status: requests per hour per key,
#: assumed where the server does not publish its own (``/capabilities``'
#: ``rateLimits``, see :func:`published_limit`).
SPEC_STATUS_LIMIT_PER_HOUR = 100
#: The spec's ``x-rateLimit`` of get-upscayl-history, which ``upscale()`` reads
#: to watch several tasks at once (see :mod:`upscayl_cloud.client.sweep`).
SPEC_HISTORY_LIMIT_PER_HOUR = 100


@dataclass(frozen=True)
class PollSchedule:
    """Delays between polls: ``initial``, then times ``factor`` up to ``maximum``
    seconds; and the hourly budget all polls of one client share.

    ``hourly_limit`` is the server's get-task-status limit (``None``: the
    spec's, or a higher one the server publishes, where ``upscale()`` reads
    it);
    polls use at most ``share`` of it in any hour (the rest is left for
    ``client status``, link re-signing and other programs using the key), of
    which ``burst`` may go at once, for the quick start.
    """

    initial: float = 0.5
    factor: float = 1.5
    maximum: float = 5.0
    hourly_limit: int | None = None
    share: float = 0.9
    burst: int = 30
    #: How long ``upscale()`` keeps polling a task whose status cannot be read
    #: (connection failures, 5xx) before giving up on it.
    outage_seconds: float = 600.0
    #: How long a task of ``upscale()`` may show no progress (the same status
    #: and percentage) before the run says so: a task still pending after
    #: that long may be on a server with no worker running, where it used
    #: to be polled for ever without a word.
    stall_seconds: float = 300.0

    def __post_init__(self) -> None:
        if not 0 < self.share <= 1:
            raise ValueError(f"share must be in (0, 1], not {self.share}")
        if self.burst < 1:
            raise ValueError(f"burst must be at least 1, not {self.burst}")
        if self.hourly_limit is not None and self.hourly_limit < 1:
            raise ValueError(f"hourly_limit must be at least 1, not {self.hourly_limit}")

    def delays(self) -> Iterator[float]:
        delay = self.initial
        while True:
            yield delay
            delay = min(self.maximum, delay * self.factor)

    def for_history(self, hourly_limit: int | None = None) -> PollSchedule:
        """The same schedule for history pages: get-upscayl-history's limit
        (the spec's, or ``hourly_limit`` where the server publishes a higher
        one) in place of get-task-status's."""
        return replace(self, hourly_limit=hourly_limit or SPEC_HISTORY_LIMIT_PER_HOUR)

    @property
    def hourly_polls(self) -> float:
        """The most polls this schedule makes in any hour."""
        limit = SPEC_STATUS_LIMIT_PER_HOUR if self.hourly_limit is None else self.hourly_limit
        return max(1.0, limit * self.share)


class PollBudget:
    """A token bucket over all polls of one client (thread-safe).

    ``burst`` polls may go at once; after that polls are spaced so that no hour
    holds more than ``hourly_polls`` of them: with the spec's limit, one poll
    a minute, spread over however many tasks are running.
    """

    def __init__(self, schedule: PollSchedule, clock: Callable[[], float] = time.monotonic) -> None:
        # At most half the hour's polls at once, so that the rest still come
        # at a useful pace (one every 2 minutes with the spec's limit).
        #: The get-task-status limit this budget was sized for.
        self.hourly_limit = schedule.hourly_limit or SPEC_STATUS_LIMIT_PER_HOUR
        self.capacity = float(max(1, min(schedule.burst, int(schedule.hourly_polls / 2))))
        # At least one poll an hour after the burst, however small the limit:
        # a rate near zero meant waits of decades.
        self.rate = max(1.0, schedule.hourly_polls - self.capacity) / 3600
        self._tokens = self.capacity
        self._clock = clock
        self._stamp = clock()
        self._lock = threading.Lock()

    def continue_from(self, earlier: PollBudget) -> PollBudget:
        """Start from what ``earlier`` has left now (at most this budget's
        burst): a new schedule or a raised limit must not hand back the polls
        already spent this hour, or the next ones meet 429s. Returns self."""
        with earlier._lock:
            elapsed = self._clock() - earlier._stamp
            left = min(earlier.capacity, earlier._tokens + elapsed * earlier.rate)
        with self._lock:
            self._tokens = min(self.capacity, left)
        return self

    def take(self) -> float:
        """Reserve the next poll; returns how many seconds to wait before sending it."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= 1
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class PollPacing:
    """A client's poll schedule and the budgets it sizes, kept together:
    assigning a new ``poll`` brings budgets of its own limit and burst (they
    used to go on pacing by the schedule it replaced)."""

    #: Shared by every poll of the client (``wait`` and ``upscale``), so that
    #: together they stay within get-task-status's hourly limit.
    poll_budget: PollBudget
    #: Paces the history pages ``upscale()`` reads to watch several tasks at
    #: once (get-upscayl-history's own hourly limit; see ``client.sweep``).
    history_budget: PollBudget

    @property
    def poll(self) -> PollSchedule:
        return self._poll

    @poll.setter
    def poll(self, schedule: PollSchedule) -> None:
        self._poll = schedule
        status, history = PollBudget(schedule), PollBudget(schedule.for_history())
        if hasattr(self, "poll_budget"):  # a new schedule, not the first
            status.continue_from(self.poll_budget)
            history.continue_from(self.history_budget)
        self.poll_budget, self.history_budget = status, history


def published_limit(capabilities: Mapping[str, Any], operation: str) -> int | None:
    """``operation``'s limit per hour as the server publishes it in
    ``/capabilities`` (``rateLimits``), or None where it publishes none: a
    server whose operator raised it can be polled that much faster."""
    limits = capabilities.get("rateLimits")
    published = limits.get(operation) if isinstance(limits, Mapping) else None
    if not isinstance(published, Mapping):
        return None
    requests, period = published.get("requests"), published.get("periodSeconds")
    if not (_positive_int(requests) and _positive_int(period)):
        return None
    return max(1, int(requests * 3600 / period))


def _positive_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def percent(data: Mapping[str, Any]) -> float:
    """The task's ``progress`` (a string in the spec) as a number, 0 when unknown."""
    try:
        return float(str(data.get("progress") or 0))
    except ValueError:
        return 0.0
