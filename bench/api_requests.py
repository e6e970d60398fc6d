"""Requests per second one API process answers, per operation, on the
embedded stack (SQLite, counters in memory) and on the scale-out one
(PostgreSQL, counters in Redis): what docs/deployment.md's sizing rests on.

A real ``upscayl-cloud serve`` (no workers: nothing competes with the API) is
started per stack on a throwaway data directory; PostgreSQL and Redis are
throwaway too (tests/support/postgres.py, scripts/redis.sh). One key is given
rate limits too high to matter and ``--tasks`` queued tasks (small PNGs sent
through start-task), then each operation is driven for ``--seconds`` by
``--concurrency`` requests in flight from one asyncio httpx client:

- ``healthz``: no key, no database: the HTTP stack alone, the baseline;
- ``get-task-status``: a random one of the key's tasks, links signed;
- ``get-upscayl-history``: the newest 20 of them;
- ``get-upload-url``: a write (an upload row), a link signed.

Reported per operation: requests per second, median and 99th-percentile
latency, and the ratio of its rate to ``healthz`` in the same run. The load
generator shares the machine with the server, so on a small machine the
absolute rates are a floor; the ratios say what each operation costs over
the HTTP stack.

    .venv/bin/python bench/api_requests.py                  # both stacks
    .venv/bin/python bench/api_requests.py --stacks embedded --seconds 5
"""

# ruff: noqa: E402  (tests/ goes on the path before the imports from it)
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # support.server, support.postgres

import httpx

from support.context import new_principal
from support.images import png_bytes
from support.server import Server
from support.services import REDIS_SCRIPT, ScriptService, find_redis_server
from upscayl_cloud.config import SPEC_RATE_LIMITS

#: High enough that no limit is met, low enough to stay a real limit check.
UNLIMITED = {operation: "100000000/hour" for operation in SPEC_RATE_LIMITS}
OPERATIONS = ("healthz", "get-task-status", "get-upscayl-history", "get-upload-url")


@dataclass
class Measured:
    operation: str
    requests: int
    seconds: float
    latencies_ms: list[float]
    errors: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@contextmanager
def scale_out_services(work: Path) -> Iterator[dict[str, str]]:
    """A throwaway PostgreSQL database and Redis, as the settings that name them."""
    from support.postgres import Postgres

    if find_redis_server() is None:
        raise SystemExit("scale-out needs redis-server: run scripts/install-test-services.sh")
    postgres = Postgres().start()
    redis = ScriptService(REDIS_SCRIPT, work / "redis", {})
    try:
        if (failure := redis.start()) is not None:
            raise SystemExit(f"redis did not start: {failure}")
        yield {
            "database_url": postgres.new_database(),
            "rate_limit_storage_uri": redis.env["UPSCAYL_RATE_LIMIT_STORAGE_URI"],
        }
    finally:
        redis.stop()
        postgres.stop()


def seed(server: Server, tasks: int) -> tuple[str, list[str]]:
    """A key with ``tasks`` queued tasks (small PNGs, through the real API)."""
    key = new_principal(server.ctx, credits=tasks * 10)[0]
    ids = []
    with httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=30) as http:
        for n in range(tasks):
            files = {"file": (f"seed-{n}.png", png_bytes(16, 16), "image/png")}
            answer = http.post("/start-task", files=files, data={"model": "quick-clear-4x"})
            answer.raise_for_status()
            ids.append(answer.json()["data"]["taskId"])
    return key, ids


def request_for(
    operation: str, http: httpx.AsyncClient, key: str, task_ids: list[str]
) -> Callable[[], Awaitable[httpx.Response]]:
    headers = {"X-API-Key": key}
    if operation == "healthz":
        return lambda: http.get("/healthz")
    if operation == "get-task-status":
        return lambda: http.post(
            "/get-task-status", json={"taskId": random.choice(task_ids)}, headers=headers
        )
    if operation == "get-upscayl-history":
        return lambda: http.post("/get-upscayl-history", json={"limit": 20}, headers=headers)
    upload = {"originalFileName": "a.png", "fileType": "image/png", "fileSize": 1000}
    return lambda: http.post("/get-upload-url", json=upload, headers=headers)


async def drive(
    url: str, operation: str, key: str, task_ids: list[str], seconds: float, concurrency: int
) -> Measured:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:
        send = request_for(operation, http, key, task_ids)
        for _ in range(concurrency):  # warm: connections open, caches filled
            await send()
        latencies: list[float] = []
        errors = 0
        deadline = time.perf_counter() + seconds

        async def loop() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                answer = await send()
                latencies.append((time.perf_counter() - began) * 1000)
                errors += answer.status_code != 200

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return Measured(operation, len(latencies), elapsed, latencies, errors)


def run_stack(name: str, settings: dict[str, str], args: argparse.Namespace) -> list[Measured]:
    work = Path(tempfile.mkdtemp(prefix=f"upscayl-apibench-{name}-"))
    server = Server(work / "data", workers=0, rate_limits=json.dumps(UNLIMITED), **settings)
    try:
        server.start()
        key, task_ids = seed(server, args.tasks)
        results = []
        for operation in OPERATIONS:
            measured = asyncio.run(
                drive(server.url, operation, key, task_ids, args.seconds, args.concurrency)
            )
            results.append(measured)
            print(f"  {name} {operation}: {measured.rate:.0f}/s", file=sys.stderr)
        return results
    finally:
        server.stop()
        if server._ctx is not None:
            server._ctx.db.dispose()
        shutil.rmtree(work, ignore_errors=True)


def report(name: str, results: list[Measured]) -> None:
    baseline = next(m for m in results if m.operation == "healthz").rate
    print(f"\n### {name}\n")
    print("| operation | requests/s | median ms | p99 ms | vs healthz | errors |")
    print("|---|---|---|---|---|---|")
    for m in results:
        print(
            f"| {m.operation} | {m.rate:.0f} | {statistics.median(m.latencies_ms):.1f} "
            f"| {m.percentile(0.99):.1f} | {m.rate / baseline:.2f} | {m.errors} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stacks", nargs="+", default=["embedded", "scale-out"])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--tasks", type=int, default=50)
    args = parser.parse_args()
    print(
        f"# {platform.node()} {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"{args.seconds:g} s per operation, {args.concurrency} in flight, {args.tasks} tasks"
    )
    for stack in args.stacks:
        if stack == "embedded":
            report("embedded (SQLite, memory counters)", run_stack(stack, {}, args))
        elif stack == "scale-out":
            with scale_out_services(Path(tempfile.mkdtemp(prefix="upscayl-apibench-"))) as extra:
                report("scale-out (PostgreSQL, Redis counters)", run_stack(stack, extra, args))
        else:
            raise SystemExit(f"unknown stack {stack!r}: embedded or scale-out")


if __name__ == "__main__":
    main()
