"""Per-key, per-operation rate limits from the spec's ``x-rateLimit``.

The ``limits`` library's moving window (it admitted exactly 100 of 105
requests at 100/hour when measured); memory storage here, a Redis URI in
scale-out. Every limited response carries the legacy ``X-RateLimit-*``
headers and the IETF draft's ``RateLimit-Policy`` / ``RateLimit``; a refusal
adds ``Retry-After``.

An operation may have several limits (``100/hour;5/minute``): a request is
refused when any of them is reached, and then counted against none, so that
a client hammering the short limit does not use up the long one. The headers
describe one of them, the one that binds: when refused, the refusing limit
that frees last (``Retry-After`` is when every refusing limit admits again);
otherwise the limit with the fewest requests left (on a tie, the one that
frees last). ``/capabilities`` publishes the one with the lowest sustained
rate, which is what a client pacing itself must stay under.

When the counter storage (Redis) cannot be reached (refused or lost
connections, timeouts), requests are let through without limit headers: the
counters only protect against bursts (credits still bound what a key can
spend), and an outage of Redis should not become an outage of the API. A
warning per request flooded the log for the whole outage; now one warning
says when counting stops, a reminder follows each minute, and one line says
when it works again. A Redis that answers but refuses (a wrong or missing
password, a read-only replica, an ACL user without the scripts) is a mistake,
not an outage: requests still pass, so that the API keeps serving, but the
same few lines are errors. ``serve`` counts once at start
(``check_counter_storage``) and refuses to start on such a mistake, which
otherwise turned the limits off for good without a word beyond the log.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

from limits import RateLimitItem, RateLimitItemPerSecond, WindowStats, parse_many
from limits.storage import Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from upscayl_cloud.config import (
    SPEC_RATE_LIMITS,
    Settings,
    counter_storage_options,
    without_credentials,
)
from upscayl_cloud.services.errors import RateLimitExceededError

log = logging.getLogger(__name__)

#: Retry-After of a refusal whose window could not be read (the storage
#: failed between counting and reading): long enough not to hammer it.
UNKNOWN_RESET_SECONDS = 60
#: Seconds between two "still failing" lines while the counter storage fails.
REMINDER_SECONDS = 60.0
#: What the start-up check counts, as a request would: one entry, gone in a second.
_START_CHECK = RateLimitItemPerSecond(1)

#: How the counter storage fails: "unreachable" (an outage) or "refused" (it
#: answers, and says no: a setting to fix).
Failure = Literal["unreachable", "refused"]


def build_storage(uri: str) -> Storage:
    """``limits``' storage for ``uri``, a Sentinel's or a cluster's with the
    connection options of its query (``limits`` drops them; see
    ``config.counter_storage_options``)."""
    options: dict[str, Any] = counter_storage_options(uri)
    # A sync storage: the settings refuse the async+... schemes.
    return cast(Storage, storage_from_string(uri, **options))


def failure_of(error: BaseException) -> Failure:
    """Whether ``error`` means the storage is out of reach ("unreachable":
    refused or lost connections, timeouts, a Redis still loading, a cluster
    or Sentinel without a primary just now) or that it answered and refused
    ("refused": a wrong or missing password, a read-only replica, an ACL
    without the commands, anything else). redis-py's authentication errors
    are ``ConnectionError`` subclasses: they are asked first."""
    try:
        from redis import exceptions as rx
    except ImportError:  # memory:// only: no Redis to tell apart
        return "unreachable" if isinstance(error, ConnectionError | TimeoutError) else "refused"
    auth = tuple(
        getattr(rx, name)
        for name in ("AuthenticationError", "AuthorizationError", "ExternalAuthProviderError")
        if hasattr(rx, name)
    )
    if isinstance(error, auth):
        return "refused"
    outage = (
        rx.ConnectionError,  # with BusyLoadingError, MasterNotFoundError, MaxConnectionsError
        rx.TimeoutError,
        rx.ClusterDownError,  # and MasterDownError: a failover in progress
        rx.TryAgainError,
        ConnectionError,
        TimeoutError,
    )
    return "unreachable" if isinstance(error, outage) else "refused"


def _said(error: BaseException, uri: str) -> str:
    """``error`` in one line, for a log or a start-up message: its type and
    first line, with nothing of the URI's user name or password."""
    first = (str(error).splitlines() or [""])[0].strip().rstrip(".")
    said = f"{type(error).__name__}: {first}" if first else type(error).__name__
    return without_credentials(said, uri)


def _shown(uri: str) -> str:
    """``uri`` without its user name, password or query (a query may carry
    ``password=``): scheme, hosts and path, to name the storage in a line."""
    scheme, _, rest = uri.partition("://")
    rest = rest.rpartition("@")[2]
    return f"{scheme}://{rest.split('?', 1)[0].split('#', 1)[0]}"


class _StorageFailures:
    """Runs of failed checks, told once each: one line when counting stops,
    a reminder a minute, one line when it works again, as the database
    claims do (``queue/outage.py``). A line per request flooded the log for
    the whole outage, hiding everything else. Shared by the request
    threads, so locked; a run changes kind (an outage turning into a wrong
    password) with a new first line."""

    def __init__(self, uri: str, clock: Callable[[], float]) -> None:
        self._uri = uri
        self._clock = clock
        self._lock = threading.Lock()
        #: The kind of the run in progress; None while counting works.
        self.failing: Failure | None = None
        self._since = self._told = 0.0
        self._failures = 0

    def failed(self, error: BaseException) -> None:
        """Note a check the storage failed (the request was let through, or
        a refusal stood unexplained)."""
        kind = failure_of(error)
        with self._lock:
            now = self._clock()
            self._failures += 1
            if kind != self.failing:
                self.failing, self._since, self._told, self._failures = kind, now, now, 1
                first = True
            elif now - self._told >= REMINDER_SECONDS:
                self._told = now
                first = False
            else:
                return
            length, failures = now - self._since, self._failures
        said = _said(error, self._uri)
        if kind == "unreachable":
            if first:
                log.warning(
                    "rate-limit storage unreachable (%s): requests are let through without "
                    "limits until it answers; a reminder a minute",
                    said,
                )
            else:
                log.warning(
                    "rate-limit storage still unreachable after %.0f s (%d requests not "
                    "counted): %s",
                    length,
                    failures,
                    said,
                )
        elif first:
            log.error(
                "rate-limit storage refuses to count (%s): requests are let through "
                "without limits; check UPSCAYL_RATE_LIMIT_STORAGE_URI (its password, and "
                "that it names the primary, not a read-only replica); a reminder a minute",
                said,
            )
        else:
            log.error(
                "rate-limit storage still refuses to count after %.0f s (%d requests not "
                "counted): %s",
                length,
                failures,
                said,
            )

    def succeeded(self) -> None:
        """Note a check the storage answered; cheap (no lock) while nothing fails."""
        if self.failing is None:
            return
        with self._lock:
            if self.failing is None:
                return
            length, failures = self._clock() - self._since, self._failures
            self.failing = None
        log.warning(
            "rate-limit storage counts again after %.0f s (%d requests not counted)",
            length,
            failures,
        )


class RateLimits:
    def __init__(
        self,
        settings: Settings,
        storage: Storage | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``storage``: the counters' storage, built from the settings when
        None; ``clock`` paces the "still failing" reminders."""
        self.enabled = settings.rate_limits_enabled
        storage = storage or build_storage(settings.rate_limit_storage_uri)
        self._limiter = MovingWindowRateLimiter(storage)
        self._failures = _StorageFailures(settings.rate_limit_storage_uri, clock)
        # Each limit once: the same one written twice shares one counter,
        # and was counted twice a request (half its allowance).
        self._items: dict[str, list[RateLimitItem]] = {
            op: list(dict.fromkeys(parse_many(settings.rate_limit_for(op))))
            for op in SPEC_RATE_LIMITS
        }
        if self.enabled and _per_process_counters_on_a_shared_database(settings):
            log.warning(
                "rate limits are counted in this process only (UPSCAYL_RATE_LIMIT_STORAGE_URI="
                "%s) while the database is shared: each API process allows the full limit; "
                "set it to redis://... to share the counters",
                settings.rate_limit_storage_uri,
            )

    @property
    def status(self) -> str:
        """``/readyz``'s ``rateLimits``: "off" (disabled), "counting", or how
        the last check failed ("unreachable", "refused"). From the requests
        checked, never a probe: it changes with the next one."""
        if not self.enabled:
            return "off"
        return self._failures.failing or "counting"

    def published(self) -> dict[str, dict[str, int]] | None:
        """Each operation's limit as ``/capabilities`` publishes it (``requests``
        in any ``periodSeconds``); None where none is enforced. Of several, the
        one with the lowest sustained rate: a client that keeps under it keeps
        under all of them over time."""
        if not self.enabled:
            return None
        published = {}
        for op, items in self._items.items():
            item = min(items, key=lambda i: i.amount / i.get_expiry())
            published[op] = {"requests": item.amount, "periodSeconds": item.get_expiry()}
        return published

    def check(self, operation: str, key_id: str) -> tuple[dict[str, str], Exception | None]:
        """Count one request; returns its headers and, when refused, the error to raise."""
        if not self.enabled:
            return {}, None
        items = self._items[operation]
        try:
            refusing = self._count(items, key_id, operation)
        except Exception as exc:  # the storage's own errors (redis.ConnectionError...)
            self._failures.failed(exc)
            return {}, None
        try:
            item, stats = self._binding(refusing or items, bool(refusing), key_id, operation)
        except Exception as exc:  # lost after counting: the decision stands, unexplained
            self._failures.failed(exc)
            if not refusing:
                return {}, None
            item = max(refusing, key=RateLimitItem.get_expiry)
            window = item.get_expiry()
            wait = min(window, UNKNOWN_RESET_SECONDS)
            return {}, RateLimitExceededError(
                f"Too many requests: {item.amount} per {window} seconds for {operation}. "
                f"Try again in {wait} seconds",
                retry_after_seconds=wait,
            )
        self._failures.succeeded()
        window = item.get_expiry()
        reset = max(0, math.ceil(stats.reset_time - time.time()))
        headers = {
            "X-RateLimit-Limit": str(item.amount),
            "X-RateLimit-Remaining": str(stats.remaining),
            "X-RateLimit-Reset": str(math.ceil(stats.reset_time)),
            "RateLimit-Policy": f'"{operation}";q={item.amount};w={window}',
            "RateLimit": f'"{operation}";r={stats.remaining};t={reset}',
        }
        if not refusing:
            return headers, None
        return headers, RateLimitExceededError(
            f"Too many requests: {item.amount} per {window} seconds for {operation}. "
            f"Try again in {max(1, reset)} seconds",
            retry_after_seconds=max(1, reset),
        )

    def _count(
        self, items: list[RateLimitItem], key_id: str, operation: str
    ) -> list[RateLimitItem]:
        """Count one request against each of ``items``; returns those that
        refused it. With several, each is asked first (``test``) and the
        request counted only when all admit it: counted against the others,
        a request refused by one would use up their allowance too. Two
        requests racing between the test and the count may still count one
        refusal against the limits before the one that refuses it."""
        if len(items) > 1:
            refusing = [i for i in items if not self._limiter.test(i, key_id, operation)]
            if refusing:
                return refusing
        for item in items:
            if not self._limiter.hit(item, key_id, operation):
                return [item]
        return []

    def _binding(
        self, items: list[RateLimitItem], refused: bool, key_id: str, operation: str
    ) -> tuple[RateLimitItem, WindowStats]:
        """The limit the headers describe, and its window: of refusing limits,
        the one that frees last; of admitting ones, the one with the fewest
        requests left (then the one that frees last)."""
        windows = [
            (item, self._limiter.get_window_stats(item, key_id, operation)) for item in items
        ]
        if refused:
            return max(windows, key=lambda w: w[1].reset_time)
        return min(windows, key=lambda w: (w[1].remaining, -w[1].reset_time))


def _per_process_counters_on_a_shared_database(settings: Settings) -> bool:
    """PostgreSQL means scale-out, where API processes are meant to be many;
    counters in memory then multiply the published limits by their number."""
    return settings.rate_limit_storage_uri.startswith("memory") and (
        not settings.resolved_database_url.startswith("sqlite")
    )


@dataclass(frozen=True)
class StorageProblem:
    """What ``check_counter_storage`` found: ``fatal`` stops ``serve``;
    ``message`` is one line, without the URI's password."""

    fatal: bool
    message: str


def check_counter_storage(
    settings: Settings, storage: Storage | None = None
) -> StorageProblem | None:
    """Count once against the counter storage, as a request does (the
    moving window's script, which writes: a read-only replica refuses it),
    before ``serve`` starts; None when it counted, or there is nothing to
    check (limits off, counters in memory).

    A storage that refuses (a wrong or missing password, a read-only
    replica, an ACL user without the commands) or that cannot be set up (a
    cluster whose nodes do not answer as one: the API would fail to build
    it too) is fatal: each request would otherwise pass unlimited, for
    good. One out of reach is not: Redis is no start dependency, and its
    outages are let through by design (``RateLimits``), so ``serve`` starts
    with a warning."""
    uri = settings.rate_limit_storage_uri
    if not settings.rate_limits_enabled:
        return None
    if storage is None:
        if uri.startswith("memory"):  # this process's own counters: nothing to reach
            return None
        try:
            storage = build_storage(uri)
        except Exception as exc:  # a cluster client connects as it is made
            return StorageProblem(
                True,
                f"Cannot start: the rate-limit storage {_shown(uri)} could not be set up: "
                f"{_said(exc, uri)}; fix UPSCAYL_RATE_LIMIT_STORAGE_URI, or set "
                "UPSCAYL_RATE_LIMITS_ENABLED=false to run without limits",
            )
    try:
        MovingWindowRateLimiter(storage).hit(_START_CHECK, "upscayl-start-check")
    except Exception as exc:
        said = _said(exc, uri)
        if failure_of(exc) == "unreachable":
            return StorageProblem(
                False,
                f"the rate-limit storage {_shown(uri)} cannot be reached ({said}): starting "
                "anyway; requests are let through without limits until it answers",
            )
        return StorageProblem(
            True,
            f"Cannot start: the rate-limit storage {_shown(uri)} {_refusal(exc)}: {said}; "
            "fix UPSCAYL_RATE_LIMIT_STORAGE_URI, or set UPSCAYL_RATE_LIMITS_ENABLED=false "
            "to run without limits",
        )
    return None


def _refusal(error: BaseException) -> str:
    """What a storage that refused the start-up count did, in words."""
    name = type(error).__name__
    if name == "ReadOnlyError":
        return "is a read-only replica (name the primary, or its Sentinels)"
    if name == "NoPermissionError":
        return "refused a command the counters need (see its ACL user's permissions)"
    if "Auth" in name:
        return "refused its credentials (a wrong or missing password in the URI)"
    return "failed to count"
