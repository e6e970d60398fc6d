"""How fast the lease queue goes on PostgreSQL: claim/complete throughput with
many workers and no-op processing, and start-to-pick-up latency.

Throughput: N bare task rows are inserted, then P processes x T threads each
claim a task (the real ``queue.lease.claim``: one UPDATE ... WHERE id =
(SELECT ... FOR UPDATE SKIP LOCKED) RETURNING) and complete it at once (the
real guarded final UPDATE) until the queue is empty; tasks per second is N
over the wall time. Every task must come out claimed exactly once.

Latency: W idle worker threads poll the queue the way ``worker.WorkerPool``
does (claim, else sleep ``poll``); a producer commits one task row at a time
(what start-task's transaction does) at random spacing, and the pick-up
latency is claim time minus commit time.

A throwaway PostgreSQL cluster (initdb + pg_ctl on a free loopback port, as
the tests do) is started unless ``--database-url`` is given; ``--sqlite``
runs the same on a SQLite file for comparison.

    .venv/bin/python bench/lease_queue.py
    .venv/bin/python bench/lease_queue.py --tasks 4000 --configs 1x1,4x4,8x4 --polls 0.5,0.1
"""

# ruff: noqa: E402  (tests/ goes on the path before the imports from it)
from __future__ import annotations

import argparse
import multiprocessing
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # support.postgres, support.tasks

from sqlalchemy import Engine

from support.tasks import bare_tasks
from upscayl_cloud.db.engine import make_engine, now_ms
from upscayl_cloud.db.migrate import upgrade
from upscayl_cloud.queue.lease import claim, lock_for_finish
from upscayl_cloud.worker import idle_wait


def _drain(url: str, threads: int, tag: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    engine = make_engine(url)
    got: list[str] = []
    lock = threading.Lock()

    def run(n: int) -> None:
        while (held := claim(engine, f"{tag}:{n}", 60, 3)) is not None:
            with engine.begin() as conn:
                lock_for_finish(conn, held, "completed", None)
            with lock:
                got.append(held.task_id)

    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    engine.dispose()
    out.put(got)


def throughput(url: str, tasks: int, processes: int, threads: int) -> float:
    engine = make_engine(url)
    ids = set(bare_tasks(engine, tasks))
    engine.dispose()
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    started = time.perf_counter()
    procs = [
        ctx.Process(target=_drain, args=(url, threads, f"p{n}", out)) for n in range(processes)
    ]
    for proc in procs:
        proc.start()
    claimed: Counter[str] = Counter()
    for _ in procs:
        claimed.update(out.get(timeout=600))
    elapsed = time.perf_counter() - started
    for proc in procs:
        proc.join()
    assert set(claimed) == ids and max(claimed.values()) == 1, "a task was claimed twice or lost"
    return tasks / elapsed


def latency(url: str, workers: int, poll: float, samples: int) -> list[float]:
    """Milliseconds from a task's commit to its claim, ``samples`` times."""
    engine = make_engine(url)
    stop = threading.Event()
    picked: dict[str, int] = {}

    def run(n: int) -> None:
        while not stop.is_set():
            held = claim(engine, f"w{n}", 60, 3)
            if held is None:
                stop.wait(idle_wait(poll))  # exactly as worker.WorkerPool waits
                continue
            picked[held.task_id] = now_ms()
            with engine.begin() as conn:
                lock_for_finish(conn, held, "completed", None)

    pool = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(workers)]
    for thread in pool:
        thread.start()
    committed: dict[str, int] = {}
    rng = random.Random(4)
    for _ in range(samples):
        time.sleep(rng.uniform(0.05, 2 * poll))
        (task_id,) = bare_tasks(engine, 1)
        committed[task_id] = now_ms()
    deadline = time.monotonic() + 10 * poll + 5
    while len(picked) < samples and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    for thread in pool:
        thread.join()
    engine.dispose()
    return [picked[t] - committed[t] for t in committed if t in picked]


def empty_claim_ms(url: str, rounds: int = 300) -> float:
    """Cost of one idle poll: a claim that finds nothing."""
    engine = make_engine(url)
    claim(engine, "warm", 60, 3)
    started = time.perf_counter()
    for _ in range(rounds):
        claim(engine, "idle", 60, 3)
    engine.dispose()
    return (time.perf_counter() - started) * 1000 / rounds


def _fresh_url(args: argparse.Namespace, pg: object | None, name: str) -> str:
    if args.sqlite:
        return f"sqlite:///{Path(tempfile.mkdtemp()) / (name + '.db')}"
    if args.database_url:
        return args.database_url
    return pg.new_database()  # type: ignore[union-attr]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default="")
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--configs", default="1x1,1x4,2x4,4x4,8x4", help="PROCESSESxTHREADS")
    parser.add_argument("--polls", default="0.5,0.1", help="poll intervals (seconds)")
    parser.add_argument("--latency-workers", default="1,8", help="idle worker threads")
    parser.add_argument("--samples", type=int, default=40)
    args = parser.parse_args()

    pg = None
    if not args.sqlite and not args.database_url:
        from support.postgres import Postgres

        pg = Postgres().start()
    try:
        backend = "SQLite" if args.sqlite else "PostgreSQL"
        print(f"# Queue bench, {backend}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
        print(
            f"# {platform.node()}: {platform.processor() or platform.machine()}, "
            f"{multiprocessing.cpu_count()} CPUs, Python {platform.python_version()}"
        )
        print(f"# {' '.join(sys.argv)}\n")
        print("| workers (processes x threads) | tasks | tasks/s |")
        print("|---|---|---|")
        for config in filter(None, args.configs.split(",")):
            processes, threads = (int(x) for x in config.split("x"))
            url = _fresh_url(args, pg, f"t{config}")
            upgrade_engine(url)
            rate = throughput(url, args.tasks, processes, threads)
            print(f"| {processes} x {threads} | {args.tasks} | {rate:.0f} |", flush=True)
        url = _fresh_url(args, pg, "idle")
        upgrade_engine(url)
        print(f"\nOne idle poll (a claim that finds nothing): {empty_claim_ms(url):.2f} ms\n")
        print("| poll interval | idle workers | samples | pick-up mean | p50 | p95 | max |")
        print("|---|---|---|---|---|---|---|")
        for poll in (float(p) for p in args.polls.split(",")):
            for idle in (int(w) for w in args.latency_workers.split(",")):
                url = _fresh_url(args, pg, f"l{idle}_{poll}".replace(".", "_"))
                upgrade_engine(url)
                ms = sorted(latency(url, idle, poll, args.samples))
                p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))]
                print(
                    f"| {poll:g} s | {idle} | {len(ms)} | "
                    f"{statistics.mean(ms):.0f} ms | {statistics.median(ms):.0f} ms | "
                    f"{p95:.0f} ms | {ms[-1]:.0f} ms |",
                    flush=True,
                )
    finally:
        if pg is not None:
            pg.stop()


def upgrade_engine(url: str) -> None:
    engine: Engine = make_engine(url)
    upgrade(engine)
    engine.dispose()


if __name__ == "__main__":
    main()
