"""Prometheus metrics: tasks by status and queue depth (read from the
database at scrape time, so every replica reports the same truth) and
processing seconds per model (observed by the workers of this process:
``serve``'s /metrics, or a ``worker`` process's own port)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from upscayl_cloud.db.tables import UNFINISHED_TASK, task_counts, tasks
from upscayl_cloud.services.context import Context

STATUSES = ("pending", "processing", "completed", "failed")


class _TaskCollector(Collector):
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Unfinished tasks are counted (the claim's partial index holds just
        them); finished ones, a year of history, were counted as they
        finished (``task_counts``), so a scrape costs the same at any age."""
        with self._ctx.db.begin() as conn:
            unfinished = (
                select(tasks.c.status, func.count()).where(UNFINISHED_TASK).group_by(tasks.c.status)
            )
            finished = select(task_counts.c.status, func.sum(task_counts.c.count)).group_by(
                task_counts.c.status
            )
            counts = dict(conn.execute(unfinished).all()) | dict(conn.execute(finished).all())
        by_status = GaugeMetricFamily("upscayl_tasks", "Tasks by status", labels=["status"])
        for status in STATUSES:
            by_status.add_metric([status], int(counts.get(status) or 0))
        yield by_status
        yield GaugeMetricFamily(
            "upscayl_queue_depth", "Tasks waiting for a worker", value=counts.get("pending", 0)
        )


class Metrics:
    """One registry per service instance (tests build several in one process).

    ``task_counts``: whether this registry reads the task counts from the
    database. A worker process's own registry leaves them out: every API
    process reports them already, and N workers scraped would read them N
    times more for the same numbers."""

    def __init__(self, ctx: Context, task_counts: bool = True) -> None:
        self.registry = CollectorRegistry()
        if task_counts:
            self.registry.register(_TaskCollector(ctx))
        self.processing_seconds = Histogram(
            "upscayl_processing_seconds",
            "Seconds spent upscaling one file, by model",
            labelnames=["model"],
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
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
