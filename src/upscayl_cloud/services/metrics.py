"""Prometheus metrics: tasks by status and queue depth (read from the
database at scrape time, so every replica reports the same truth: take their
``max``, not their ``sum``), files and processing seconds per model (observed
by the workers of this process: ``serve``'s /metrics, or a ``worker``
process's own port), and the process's own memory, descriptors and CPU."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import and_, func, select

from upscayl_cloud.db.engine import now_ms, reading
from upscayl_cloud.db.tables import UNFINISHED_TASK, task_counts, tasks
from upscayl_cloud.services.context import Context

log = logging.getLogger(__name__)

STATUSES = ("pending", "processing", "completed", "failed")


class _TaskCollector(Collector):
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._unreadable = False  # told once per outage, not once a scrape

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Unfinished tasks are counted (the claim's partial index holds just
        them); finished ones, a year of history, were counted as they
        finished (``task_counts``), so a scrape costs the same at any age.

        Read in one read-only snapshot: a write transaction took SQLite's
        single write lock, so every scrape queued behind the workers'
        heartbeats and claims. A database that cannot be read leaves the
        task gauges out (``upscayl_database_up`` 0) rather than failing the
        scrape: the process's own counters matter most during an outage."""
        try:
            counts, waiting = self._read()
        except Exception as exc:
            if not self._unreadable:
                self._unreadable = True
                first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
                log.warning(
                    "metrics: task counts not read, until the database answers: %s", first_line
                )
            yield GaugeMetricFamily(
                "upscayl_database_up", "Whether the task counts could be read", value=0
            )
            return
        if self._unreadable:
            self._unreadable = False
            log.info("metrics: task counts read again")
        yield GaugeMetricFamily(
            "upscayl_database_up", "Whether the task counts could be read", value=1
        )
        by_status = GaugeMetricFamily("upscayl_tasks", "Tasks by status", labels=["status"])
        for status in STATUSES:
            by_status.add_metric([status], int(counts.get(status) or 0))
        yield by_status
        yield GaugeMetricFamily(
            "upscayl_queue_depth",
            "Tasks waiting for a worker: pending ones, and processing ones whose "
            "worker stopped renewing its lease (stopped or died)",
            value=waiting,
        )

    def _read(self) -> tuple[dict[str, int], int]:
        """Counts by status, and how many tasks wait for a worker."""
        with reading(self._ctx.db) as conn:
            unfinished = (
                select(tasks.c.status, func.count()).where(UNFINISHED_TASK).group_by(tasks.c.status)
            )
            finished = select(task_counts.c.status, func.sum(task_counts.c.count)).group_by(
                task_counts.c.status
            )
            counts = dict(conn.execute(unfinished).all()) | dict(conn.execute(finished).all())
            # A dead worker's task stays "processing" until its lease is
            # claimed again: it waits as much as a pending one does (unless
            # it has no attempt left: the reaper fails it, no worker takes it).
            orphaned = select(func.count()).where(
                and_(
                    tasks.c.status == "processing",
                    tasks.c.lease_until < now_ms(),
                    tasks.c.attempts < self._ctx.settings.max_attempts,
                )
            )
            waiting = int(counts.get("pending") or 0) + int(conn.execute(orphaned).scalar_one())
        return counts, waiting


class Metrics:
    """One registry per service instance (tests build several in one process).

    ``task_counts``: whether this registry reads the task counts from the
    database. A worker process's own registry leaves them out: every API
    process reports them already, and N workers scraped would read them N
    times more for the same numbers."""

    def __init__(self, ctx: Context, task_counts: bool = True) -> None:
        self.registry = CollectorRegistry()
        # Memory per worker and open descriptors are what deployments are
        # sized by (docs/deployment.md).
        for standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(standard)
        if task_counts:
            self.registry.register(_TaskCollector(ctx))
        self.processing_seconds = Histogram(
            "upscayl_processing_seconds",
            "Seconds one file that succeeded took to decode, upscale and encode, by model "
            "(from the moment it had its work space, so waits are not counted)",
            labelnames=["model"],
            # A megapixel at 8x on a CPU takes the better part of an hour.
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400),
            registry=self.registry,
        )
        self.files = Counter(
            "upscayl_files",
            "Files this process's workers finished, by model and outcome "
            "(completed, or failed: the file's own fault or an internal error)",
            labelnames=["model", "outcome"],
            registry=self.registry,
        )
        #: Worth an alert: a stalled task's worker thread may stay stuck (a
        #: hung GPU driver, say) until its process is restarted.
        self.stalled_tasks = Counter(
            "upscayl_stalled_tasks",
            "Tasks whose worker showed no sign of life for UPSCAYL_TASK_STALL_SECONDS, "
            "left to another worker; the thread may stay stuck until the process restarts",
            registry=self.registry,
        )
