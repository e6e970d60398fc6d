"""Per-key, per-operation rate limits from the spec's ``x-rateLimit``.

The ``limits`` library's moving window (it admitted exactly 100 of 105
requests at 100/hour when measured); memory storage here, a Redis URI in
scale-out. Every limited response carries the legacy ``X-RateLimit-*``
headers and the IETF draft's ``RateLimit-Policy`` / ``RateLimit``; a refusal
adds ``Retry-After``.

When the counter storage (Redis) cannot be reached, requests are let through
without limit headers and a warning is logged: the counters only protect
against bursts (credits still bound what a key can spend), and an outage of
Redis should not become an outage of the API.
"""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, parse
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
        self._items: dict[str, RateLimitItem] = {
            op: parse(settings.rate_limit_for(op)) for op in SPEC_RATE_LIMITS
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
        in any ``periodSeconds``); None where none is enforced."""
        if not self.enabled:
            return None
        return {
            op: {"requests": item.amount, "periodSeconds": item.get_expiry()}
            for op, item in self._items.items()
        }

    def check(self, operation: str, key_id: str) -> tuple[dict[str, str], Exception | None]:
        """Count one request; returns its headers and, when refused, the error to raise."""
        if not self.enabled:
            return {}, None
        item = self._items[operation]
        window = item.get_expiry()
        try:
            allowed = self._limiter.hit(item, key_id, operation)
        except Exception as exc:  # the storage's own errors (redis.ConnectionError...)
            log.warning("rate-limit storage unavailable, request let through: %s", exc)
            return {}, None
        try:
            stats = self._limiter.get_window_stats(item, key_id, operation)
        except Exception as exc:  # lost after counting: the decision stands, unexplained
            log.warning("rate-limit storage unavailable after counting: %s", exc)
            if allowed:
                return {}, None
            wait = min(window, UNKNOWN_RESET_SECONDS)
            return {}, RateLimitExceededError(
                f"Too many requests: {item.amount} per {window} seconds for {operation}. "
                f"Try again in {wait} seconds",
                retry_after_seconds=wait,
            )
        reset = max(0, math.ceil(stats.reset_time - time.time()))
        headers = {
            "X-RateLimit-Limit": str(item.amount),
            "X-RateLimit-Remaining": str(stats.remaining),
            "X-RateLimit-Reset": str(math.ceil(stats.reset_time)),
            "RateLimit-Policy": f'"{operation}";q={item.amount};w={window}',
            "RateLimit": f'"{operation}";r={stats.remaining};t={reset}',
        }
        if allowed:
            return headers, None
        return headers, RateLimitExceededError(
            f"Too many requests: {item.amount} per {window} seconds for {operation}. "
            f"Try again in {max(1, reset)} seconds",
            retry_after_seconds=max(1, reset),
        )


def _per_process_counters_on_a_shared_database(settings: Settings) -> bool:
    """PostgreSQL means scale-out, where API processes are meant to be many;
    counters in memory then multiply the published limits by their number."""
    return settings.rate_limit_storage_uri.startswith("memory") and (
        not settings.resolved_database_url.startswith("sqlite")
    )
