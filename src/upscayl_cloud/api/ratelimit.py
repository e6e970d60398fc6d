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

When the counter storage (Redis) cannot be reached, requests are let through
without limit headers and a warning is logged: the counters only protect
against bursts (credits still bound what a key can spend), and an outage of
Redis should not become an outage of the API.
"""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, WindowStats, parse_many
from limits.storage import Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from upscayl_cloud.config import SPEC_RATE_LIMITS, Settings
from upscayl_cloud.services.errors import RateLimitExceededError

log = logging.getLogger(__name__)

#: Retry-After of a refusal whose window could not be read (the storage
#: failed between counting and reading): long enough not to hammer it.
UNKNOWN_RESET_SECONDS = 60


class RateLimits:
    def __init__(self, settings: Settings, storage: Storage | None = None) -> None:
        self.enabled = settings.rate_limits_enabled
        storage = storage or storage_from_string(settings.rate_limit_storage_uri)
        self._limiter = MovingWindowRateLimiter(storage)
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
            log.warning("rate-limit storage unavailable, request let through: %s", exc)
            return {}, None
        try:
            item, stats = self._binding(refusing or items, bool(refusing), key_id, operation)
        except Exception as exc:  # lost after counting: the decision stands, unexplained
            log.warning("rate-limit storage unavailable after counting: %s", exc)
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
