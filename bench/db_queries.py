"""Every hot query of the API, workers and sweeper, on PostgreSQL with a
year of history: plan and time of each, before and after a schema revision.

The data (``--scale 1``): 1,000 accounts, 2,000,000 tasks (one account holds
200,000), 3,000,000 task_files (half the tasks are batches of two),
3,150,000 uploads (one per task file, plus 150,000 never named by a task),
spread over a year and mostly old: completed (5% failed), results expired
and marked deleted, originals expired, marked deleted and purged. The newest
2,000 tasks are pending and 500 processing (a few with lost leases); about
ten minutes' worth of originals and results are due for the sweeper, and a
few originals are marked deleted but not yet purged. It is generated
with ``INSERT ... SELECT generate_series`` into a database migrated by the
project's own migrations, then ``VACUUM ANALYZE``d (as autovacuum would have).

Each case runs the real service function (``queue.lease.claim``,
``services.status.history``, ``services.sweeper.sweep``...) once, on an
engine whose transactions are all rolled back, so every case sees the same
data however often it runs. The SQL it sent is captured, and each distinct
statement is run again under ``EXPLAIN (ANALYZE, BUFFERS)`` (also rolled
back) ``--repeat`` times; the median execution time is reported with the
rows it returned, the rows its scans read, the shared buffers it touched and
the scans it used. This is done at each revision of ``--revisions`` in
turn (default: 0003, the schema before the indexes of 0004, then head), on
the same data. The code is head's: cases that need a table an older
revision lacks (0005's ``task_counts``: the scrape, finish, fail and sweep) are
left out there, and the scrape's query from before 0005 runs as a case of
its own at every revision.

A throwaway PostgreSQL cluster (initdb + pg_ctl on a free loopback port, as
the tests do) is started and removed unless ``--database-url`` is given
(an empty database, or with ``--reuse`` one this script already loaded).

    .venv/bin/python bench/db_queries.py                 # full size: ~15 min on 2 CPUs (5 to load)
    .venv/bin/python bench/db_queries.py --scale 0.1 --plans /tmp/plans.txt
"""

# ruff: noqa: E402  (tests/ goes on the path before the imports from it)
from __future__ import annotations

import argparse
import dataclasses
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # support.postgres, support.context

from alembic import command
from sqlalchemy import Connection, Engine, event, func, inspect, select, text

from support.context import make_settings
from upscayl_cloud.db.engine import make_engine, now_ms
from upscayl_cloud.db.migrate import alembic_config
from upscayl_cloud.db.tables import task_files, tasks
from upscayl_cloud.db.tables import uploads as uploads_table
from upscayl_cloud.queue import lease
from upscayl_cloud.services import health, keys, results, status, sweeper, uploads
from upscayl_cloud.services import tasks as task_service
from upscayl_cloud.services.context import Context, build_context
from upscayl_cloud.services.errors import BadRequestError, RateLimitExceededError
from upscayl_cloud.services.keys import Principal
from upscayl_cloud.services.metrics import Metrics

YEAR_MS = 365 * 24 * 3600 * 1000
DAY_MS = 24 * 3600 * 1000
BENCH_KEY = "ucbench-0000000000000000000000000000"
BASE_URL = "http://bench.invalid"
#: The smallest ``--scale`` every case runs at (0.01: 20,000 tasks, account
#: 0's newest uploads about 4 hours apart). At 0.001 account 0's tasks are
#: 44 hours apart, none of its uploads is still live, and the start-task
#: case, which names two, ended the run in MissingFieldsError after the load.
MIN_SCALE = 0.01


def account_id(n: int) -> str:
    """Account ``n``'s id, as the SQL below makes it (account 0 is the big one)."""
    import hashlib
    import uuid

    return str(uuid.UUID(hashlib.md5(f"acct{n}".encode()).hexdigest()))


# --------------------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class Sizes:
    tasks: int
    accounts: int
    pending: int
    processing: int
    orphans: int  # uploads named by no task

    @classmethod
    def at(cls, scale: float) -> Sizes:
        return cls(
            tasks=int(2_000_000 * scale),
            accounts=max(10, int(1000 * min(scale, 1))),
            pending=max(50, int(2000 * min(scale, 1))),
            processing=max(20, int(500 * min(scale, 1))),
            orphans=int(150_000 * scale),
        )


def load(engine: Engine, sizes: Sizes, secret: bytes) -> dict[str, float]:
    """Fill the tables; returns seconds per step."""
    now = now_ms()
    t0 = now - YEAR_MS
    step = YEAR_MS // sizes.tasks
    # Sweeper passes run every minute: what expired more than ten minutes
    # ago is already marked (and purged); the last ten minutes are due.
    swept_before = now - 10 * 60 * 1000
    p = {
        "n": sizes.tasks,
        "a1": sizes.accounts - 1,
        "pend": sizes.tasks - sizes.pending,
        "proc": sizes.tasks - sizes.pending - sizes.processing,
        "t0": t0,
        "step": step,
        "now": now,
        "swept": swept_before,
        "up_keep": DAY_MS,
        "res_keep": 7 * DAY_MS,
        "orphans": sizes.orphans,
        "ostep": YEAR_MS // max(1, sizes.orphans),
    }
    # Account n of task i: every tenth task is account 0's (200,000 of 2M).
    acct = "md5('acct' || (CASE WHEN {i} % 10 = 0 THEN 0 ELSE 1 + {i} % :a1 END))::uuid::text"
    steps: list[tuple[str, str]] = [
        (
            "seq",
            f"""
            CREATE UNLOGGED TABLE bench_seq AS
            SELECT i, md5('task' || i)::uuid::text AS id, {acct.format(i="i")} AS account_id,
                   CASE WHEN i >= :pend THEN 'pending'
                        WHEN i >= :proc THEN 'processing'
                        WHEN i % 23 = 5 THEN 'failed'
                        ELSE 'completed' END AS status,
                   :t0 + i * :step AS created_at,
                   (i % 4 < 2) AS batch
            FROM generate_series(0::bigint, :n - 1) AS i
            """,
        ),
        (
            "accounts",
            """
            INSERT INTO accounts (id, name, credits, created_at, last_task_at)
            SELECT s.account_id, 'bench ' || s.account_id, 1000000000, :t0 - 1000, max(s.created_at)
            FROM bench_seq s GROUP BY s.account_id
            """,
        ),
        (
            "api_keys",
            """
            INSERT INTO api_keys (id, account_id, name, prefix, digest, created_at, revoked_at)
            SELECT md5('key' || a.id)::uuid::text, a.id, 'bench', 'ucbench',
                   md5('k1' || a.id) || md5('k2' || a.id), :t0, NULL
            FROM accounts a
            """,
        ),
        (
            "tasks",
            """
            INSERT INTO tasks (id, account_id, status, model, scale, save_image_as, enhance_face,
                               batch_mode, progress, error, attempts, lease_owner, lease_until,
                               credits_reserved, credits_charged, created_at, updated_at,
                               finished_at)
            SELECT id, account_id, status, 'upscayl-standard-4x', 4, 'jpg', false, batch,
                   CASE WHEN status IN ('completed', 'failed') THEN 100 ELSE 0 END,
                   CASE WHEN status = 'failed' THEN 'engine failed' END,
                   CASE WHEN status = 'pending' THEN 0
                        WHEN status = 'processing' AND i % 100 = 0 THEN 3 ELSE 1 END,
                   CASE WHEN status = 'processing' AND i % 50 = 0 THEN 'bench-lost'
                        WHEN status = 'processing' THEN 'bench-worker' END,
                   CASE WHEN status = 'processing' AND i % 50 = 0 THEN :now - 1000
                        WHEN status = 'processing' THEN :now + 60000 ELSE 0 END,
                   CASE WHEN batch THEN 2 ELSE 1 END,
                   CASE WHEN status = 'completed' THEN CASE WHEN batch THEN 2 ELSE 1 END
                        ELSE 0 END,
                   created_at,
                   created_at + 30000,
                   CASE WHEN status IN ('completed', 'failed') THEN created_at + 30000 END
            FROM bench_seq ORDER BY i
            """,
        ),
        (
            "task_files",
            """
            INSERT INTO task_files (task_id, position, file_name, original_file_name, file_type,
                                    file_size, source_key, status, error, result_key,
                                    thumbnail_key, processed_file_name, result_type,
                                    final_file_size, width, height, completed_at, expires_at,
                                    deleted_at)
            SELECT s.id, f, 'f' || s.i || '-' || f || '.png', 'photo ' || s.i || '.png',
                   'image/png', 2000000,
                   'uploads/' || s.account_id || '/f' || s.i || '-' || f || '.png',
                   CASE WHEN s.status IN ('completed', 'failed') THEN s.status ELSE 'pending' END,
                   CASE WHEN s.status = 'failed' THEN 'engine failed' END,
                   r.result_key, r.result_key || '.thumb.jpg',
                   CASE WHEN s.status = 'completed' THEN 'photo ' || s.i || '_4x.jpg' END,
                   CASE WHEN s.status = 'completed' THEN 'image/jpeg' END,
                   CASE WHEN s.status = 'completed' THEN 9000000 END,
                   CASE WHEN s.status = 'completed' THEN 4000 END,
                   CASE WHEN s.status = 'completed' THEN 3000 END,
                   CASE WHEN s.status = 'completed' THEN s.created_at + 30000 END,
                   CASE WHEN s.status = 'completed' THEN s.created_at + 30000 + :res_keep END,
                   CASE WHEN s.status = 'completed'
                             AND s.created_at + 30000 + :res_keep + 30000 < :swept
                        THEN s.created_at + 30000 + :res_keep + 30000 END
            FROM bench_seq s
            CROSS JOIN LATERAL generate_series(0, CASE WHEN s.batch THEN 1 ELSE 0 END) AS f
            CROSS JOIN LATERAL (
                SELECT CASE WHEN s.status = 'completed'
                            THEN 'results/' || s.account_id || '/' || s.id || '/1/' || f || '.jpg'
                       END AS result_key
            ) AS r
            ORDER BY s.i, f
            """,
        ),
        (
            "uploads",
            """
            INSERT INTO uploads (file_name, account_id, original_file_name, file_type, file_size,
                                 storage_key, multipart_id, part_size, created_at, url_expires_at,
                                 expires_at, deleted_at, purged_at)
            SELECT u.file_name, u.account_id, 'photo.png', 'image/png', 2000000,
                   'uploads/' || u.account_id || '/' || u.file_name,
                   CASE WHEN u.k % 50 = 0 THEN 'mp-' || u.file_name END,
                   CASE WHEN u.k % 50 = 0 THEN 8388608 END,
                   u.created_at, u.created_at + 3600000, u.created_at + :up_keep,
                   u.deleted_at,
                   CASE WHEN u.k % 100000 = 7 THEN NULL ELSE u.deleted_at END
            FROM (
                SELECT s.i * 2 + f AS k, 'f' || s.i || '-' || f || '.png' AS file_name,
                       s.account_id, s.created_at - 5000 AS created_at,
                       CASE WHEN s.status IN ('completed', 'failed')
                                 AND s.created_at - 5000 + :up_keep + 30000 < :swept
                            THEN s.created_at - 5000 + :up_keep + 30000 END AS deleted_at
                FROM bench_seq s
                CROSS JOIN LATERAL generate_series(0, CASE WHEN s.batch THEN 1 ELSE 0 END) AS f
                UNION ALL
                SELECT j * 2 + 1, 'x' || j || '.png', {orphan_acct}, :t0 + j * :ostep,
                       CASE WHEN :t0 + j * :ostep + :up_keep + 30000 < :swept
                            THEN :t0 + j * :ostep + :up_keep + 30000 END
                FROM generate_series(0::bigint, :orphans - 1) AS j
            ) AS u
            ORDER BY u.created_at
            """.replace("{orphan_acct}", acct.format(i="j")),
        ),
        ("drop seq", "DROP TABLE bench_seq"),
    ]
    took: dict[str, float] = {}
    with engine.begin() as conn:
        conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
        conn.exec_driver_sql("SET LOCAL maintenance_work_mem = '256MB'")
        conn.exec_driver_sql("SET LOCAL work_mem = '64MB'")
        for name, sql in steps:
            start = time.perf_counter()
            used = {k: v for k, v in p.items() if f":{k}" in sql}
            conn.execute(text(sql), used)
            took[name] = time.perf_counter() - start
            print(f"  load {name}: {took[name]:.1f} s", flush=True)
        # The one key the cases authenticate with, on the big account.
        conn.execute(
            text("UPDATE api_keys SET digest = :d WHERE account_id = :a"),
            {"d": keys._digest(secret, BENCH_KEY), "a": account_id(0)},
        )
    took["vacuum analyze"] = vacuum_analyze(engine)
    print(f"  vacuum analyze: {took['vacuum analyze']:.1f} s", flush=True)
    return took


def vacuum_analyze(engine: Engine) -> float:
    start = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in ("accounts", "api_keys", "tasks", "task_files", "uploads"):
            conn.exec_driver_sql(f"VACUUM ANALYZE {table}")
    return time.perf_counter() - start


def migrate_to(engine: Engine, revision: str) -> None:
    """Move the schema to ``revision`` (up or down), as db.migrate.upgrade does to head."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    current = current_revision(engine)
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        if revision == "head" or current is None or revision >= current:
            command.upgrade(config, revision)
        else:
            command.downgrade(config, revision)
        connection.commit()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        has = conn.exec_driver_sql("SELECT to_regclass('alembic_version')").scalar()
        if has is None:
            return None
        return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


# ------------------------------------------------------------------ measuring


class RollbackEngine:
    """Hands out connections whose every transaction is rolled back: the
    services run for real, and leave the data as it was."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect
        self.url = engine.url

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn.begin()
            try:
                yield conn
            finally:
                conn.rollback()

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            try:
                yield conn
            finally:
                conn.rollback()


@dataclasses.dataclass
class Statement:
    sql: str
    params: Any
    count: int = 1


@dataclasses.dataclass
class Measured:
    case: str
    index: int
    sql: str
    count: int
    ms: float
    returned: int
    read: int
    buffers: int
    scans: str
    plan_text: str


def capture(engine: Engine, call: Callable[[], object]) -> tuple[float, list[Statement]]:
    """Run ``call``; its wall time and the distinct statements it sent, in order."""
    seen: dict[str, Statement] = {}

    def record(_conn: Any, _cursor: Any, sql: str, params: Any, _ctx: Any, many: bool) -> None:
        if many and isinstance(params, list | tuple):
            params = params[0]
        if sql in seen:
            seen[sql].count += 1
        else:
            seen[sql] = Statement(sql, params)

    event.listen(engine, "before_cursor_execute", record)
    try:
        start = time.perf_counter()
        call()
        wall = time.perf_counter() - start
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return wall * 1000, list(seen.values())


def _walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _walk(child)


def _scan_summary(plan: dict[str, Any]) -> tuple[int, str]:
    """Rows the scans read (returned plus filtered out, over every loop) and
    the scans, as "Index Scan ix_x(tasks)"."""
    read = 0
    scans: list[str] = []
    for node in _walk(plan):
        kind = node["Node Type"]
        if "Scan" not in kind or kind in ("Subquery Scan", "CTE Scan", "Function Scan"):
            continue
        loops = node.get("Actual Loops", 1)
        rows = node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
        rows += node.get("Rows Removed by Index Recheck", 0)
        read += int(rows * loops)
        if kind == "Bitmap Index Scan":
            continue  # its heap scan is counted
        where = node.get("Index Name") or ""
        rel = node.get("Relation Name", "")
        short = kind.replace(" Scan", "").replace("Index Only", "IndexOnly")
        scans.append(f"{short} {where}({rel})" if where else f"{short}({rel})")
    return read, ", ".join(scans)


def _render(node: dict[str, Any], depth: int = 0) -> Iterator[str]:
    """A JSON plan node as EXPLAIN's text would show it, briefly."""
    what = node["Node Type"]
    if node.get("Join Type", "Inner") != "Inner":
        what += f" ({node['Join Type']})"
    if node.get("Index Name"):
        what += f" using {node['Index Name']}"
    if node.get("Relation Name"):
        what += f" on {node['Relation Name']}"
    if node.get("Parent Relationship") in ("SubPlan", "InitPlan"):
        what = f"{node.get('Subplan Name', node['Parent Relationship'])}: {what}"
    yield (
        f"{'  ' * depth}-> {what} (actual time={node.get('Actual Total Time', 0):.3f}"
        f" rows={node.get('Actual Rows', 0)} loops={node.get('Actual Loops', 1)})"
    )
    for key in ("Index Cond", "Hash Cond", "Filter", "Rows Removed by Filter"):
        if key in node:
            yield f"{'  ' * depth}     {key}: {node[key]}"
    for child in node.get("Plans", []):
        yield from _render(child, depth + 1)


def explain(
    engine: Engine, statements: list[Statement], repeat: int
) -> list[tuple[float, dict[str, Any], str]]:
    """Each statement's median time and plan; a case's statements run in
    order in one transaction (an insert needs the row inserted before it),
    rolled back after each round. A case slower than a second is run once."""
    times: list[list[float]] = [[] for _ in statements]
    plans: list[dict[str, Any]] = [{} for _ in statements]
    for _ in range(repeat):
        with engine.connect() as conn:
            conn.begin()
            try:
                conn.exec_driver_sql("SET LOCAL statement_timeout = '300s'")
                for n, stmt in enumerate(statements):
                    got = conn.exec_driver_sql(
                        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + stmt.sql, stmt.params
                    ).scalar()
                    plans[n] = got[0]
                    times[n].append(got[0]["Execution Time"] + got[0].get("Planning Time", 0))
            finally:
                conn.rollback()
        if sum(t[-1] for t in times) > 1000:
            break
    return [
        (statistics.median(t), p, "\n".join(_render(p["Plan"])))
        for t, p in zip(times, plans, strict=True)
    ]


@dataclasses.dataclass
class Fixture:
    """Rows of the loaded data the cases name."""

    big: Principal
    processing: lease.Claim
    processing_files: list[int]
    status_task: str
    middle_offset: int
    multipart_id: str
    live_files: list[str]


def fixture(engine: Engine) -> Fixture:
    big = account_id(0)
    with engine.begin() as conn:
        # The live workers' leases run for the whole measurement; the lost
        # ones (lease_owner bench-lost) stay expired.
        conn.execute(
            text("UPDATE tasks SET lease_until = :until WHERE lease_owner = 'bench-worker'"),
            {"until": now_ms() + 6 * 3600_000},
        )
    with engine.connect() as conn:
        key_id = conn.execute(
            text("SELECT id FROM api_keys WHERE account_id = :a"), {"a": big}
        ).scalar_one()
        proc = conn.execute(
            text(
                "SELECT id, attempts FROM tasks WHERE lease_owner = 'bench-worker'"
                " AND account_id = :a ORDER BY created_at LIMIT 1"
            ),
            {"a": big},
        ).one()
        files = conn.execute(
            select(task_files.c.id).where(task_files.c.task_id == proc.id)
        ).scalars()
        done = conn.execute(
            text(
                "SELECT id FROM tasks WHERE account_id = :a AND status = 'completed'"
                " AND batch_mode ORDER BY created_at DESC LIMIT 1"
            ),
            {"a": big},
        ).scalar_one()
        created = conn.execute(
            select(tasks.c.created_at)
            .where(tasks.c.account_id == big)
            .order_by(tasks.c.created_at)
            .offset(100_000 if _count(conn, big) > 150_000 else 10)
            .limit(1)
        ).scalar_one()
        multipart = conn.execute(
            text(
                "SELECT multipart_id FROM uploads WHERE account_id = :a"
                " AND multipart_id IS NOT NULL"
                " ORDER BY created_at DESC LIMIT 1"
            ),
            {"a": big},
        ).scalar_one()
        live = conn.execute(
            text(
                "SELECT file_name FROM uploads WHERE account_id = :a AND deleted_at IS NULL"
                " AND expires_at > :soon ORDER BY created_at DESC LIMIT 2"
            ),
            {"a": big, "soon": now_ms() + 3600_000},
        ).scalars()
        return Fixture(
            Principal(account_id=big, key_id=key_id),
            lease.Claim(proc.id, proc.attempts),
            list(files),
            done,
            created,
            multipart,
            list(live),
        )


def _count(conn: Connection, account: str) -> int:
    return conn.execute(
        text("SELECT count(*) FROM tasks WHERE account_id = :a"), {"a": account}
    ).scalar_one()


#: A case's name and the call it measures.
Case = tuple[str, Callable[[], object]]


def cases(ctx: Context, fx: Fixture) -> list[Case]:
    db: Any = ctx.db
    big = fx.big

    def history(**kw: Any) -> Callable[[], object]:
        return lambda: status.history(ctx, big, BASE_URL, **kw)

    def start_task() -> str:
        def checked(_ctx: Context, principal: Principal, _o: Any, entry: Any, *_a: Any) -> Any:
            with ctx.db.begin() as conn:  # check_file's ownership read, without the header
                row = conn.execute(
                    select(uploads_table).where(
                        uploads_table.c.file_name == entry["fileName"],
                        uploads_table.c.account_id == principal.account_id,
                        uploads_table.c.deleted_at.is_(None),
                    )
                ).one()
            return task_service.CheckedFile(
                row.file_name,
                row.original_file_name,
                row.file_type,
                row.file_size,
                row.storage_key,
            )

        real = task_service.check_file
        task_service.check_file = checked  # type: ignore[assignment]
        try:
            entries = [{"fileName": name} for name in fx.live_files]
            return task_service.start_task(ctx, big, task_service.TaskOptions(), entries)
        finally:
            task_service.check_file = real  # type: ignore[assignment]

    def over_cap() -> None:
        with ctx.db.begin() as conn, suppress(RateLimitExceededError):
            uploads.check_pending(conn, big.account_id, 1, now_ms(), 0)

    def complete_multipart() -> None:
        with suppress(BadRequestError):
            uploads.complete_multipart(ctx, big, fx.multipart_id, "not/its/key", [])

    def finish() -> bool:
        outcomes = [
            results.FileOutcome(
                i,
                True,
                None,
                f"results/{i}.jpg",
                f"results/{i}.thumb.jpg",
                "photo_4x.jpg",
                "image/jpeg",
                9000000,
                4000,
                3000,
            )
            for i in fx.processing_files
        ]
        return results.finish_task(ctx, fx.processing, outcomes, {})

    def worker_reads() -> None:
        with ctx.db.begin() as conn:  # worker.process's reads
            conn.execute(select(tasks).where(tasks.c.id == fx.processing.task_id)).one()
            conn.execute(
                select(task_files)
                .where(task_files.c.task_id == fx.processing.task_id)
                .order_by(task_files.c.position)
            ).all()

    def scrape_before_0005() -> None:
        """/metrics' one query before 0005: every task, by status."""
        with ctx.db.begin() as conn:
            conn.execute(select(tasks.c.status, func.count()).group_by(tasks.c.status)).all()

    metrics = Metrics(ctx)
    # The scrape and the finishes (the sweep's reaper too) use task_counts,
    # from 0005 on: at an older revision they are left out, and the
    # scrape's old query runs alone.
    scrape: list[Case] = [("metrics scrape", lambda: list(metrics.registry.collect()))]
    finishes: list[Case] = [
        ("finish (completed)", finish),
        ("fail", lambda: results.fail_task(ctx, fx.processing, "boom")),
    ]
    sweep: list[Case] = [("sweep", lambda: sweeper.sweep(ctx))]
    if not inspect(db.engine).has_table("task_counts"):
        scrape = finishes = sweep = []
    return [
        ("authenticate", lambda: keys.authenticate(ctx, BENCH_KEY)),
        ("readiness", lambda: health.check_dependencies(ctx, {})),
        ("metrics scrape as before 0005", scrape_before_0005),
        *scrape,
        ("claim", lambda: lease.claim(db, "bench", 60, 3)),
        ("worker reads", worker_reads),
        ("renew", lambda: lease.renew(db, fx.processing, 60, 50)),
        *finishes,
        ("task status", lambda: status.task_status(ctx, big, BASE_URL, fx.status_task)),
        ("history", history()),
        ("history failed=true", history(failed=True)),
        ("history failed=false", history(failed=False)),
        ("history batch=true", history(batch=True)),
        ("history batch=false", history(batch=False)),
        ("history status=pending", history(status="pending")),
        ("history status=processing", history(status="processing")),
        ("history status=completed", history(status="completed")),
        ("history status=failed", history(status="failed")),
        ("history offset (page 5,000)", history(timestamp_offset=fx.middle_offset)),
        ("history offset + failed", history(timestamp_offset=fx.middle_offset, failed=True)),
        ("start-task (2 files)", start_task),
        (
            "get-upload-url",
            lambda: uploads.request_upload(ctx, big, BASE_URL, "photo.png", "image/png", 1000),
        ),
        ("pending cap refused", over_cap),
        ("complete multipart", complete_multipart),
        *sweep,
    ]


def measure(ctx: Context, engine: Engine, fx: Fixture, repeat: int) -> list[Measured]:
    out: list[Measured] = []
    for name, call in cases(ctx, fx):
        wall, statements = capture(engine, call)
        if wall < 1000:  # again, warm: caches, the pool, lazy imports
            wall, statements = capture(engine, call)
        explained = explain(engine, statements, repeat)
        for index, (stmt, (ms, plan, plan_text)) in enumerate(
            zip(statements, explained, strict=True)
        ):
            read, scans = _scan_summary(plan["Plan"])
            top = plan["Plan"]
            buffers = top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0)
            out.append(
                Measured(
                    name,
                    index,
                    stmt.sql,
                    stmt.count,
                    ms,
                    int(top.get("Actual Rows", 0)),
                    read,
                    buffers,
                    scans,
                    plan_text,
                )
            )
        print(f"  {name}: call {wall:.1f} ms, {len(statements)} statements", flush=True)
    return out


def _short_sql(sql: str) -> str:
    words = " ".join(sql.split())
    return words[:90] + ("..." if len(words) > 90 else "")


def report(phases: dict[str, list[Measured]], plans: Path | None) -> None:
    names = list(phases)
    keyed = {rev: {(m.case, m.index): m for m in ms} for rev, ms in phases.items()}
    order: list[tuple[str, int]] = []
    for ms in phases.values():
        for m in ms:
            if (m.case, m.index) not in order:
                order.append((m.case, m.index))
    head = " | ".join(f"{rev} ms" for rev in names)
    print(
        f"\n| query | statement | runs | {head} | rows | rows read ({' / '.join(names)}) |"
        " scans (last) |"
    )
    print("|---|---|---:|" + "---:|" * len(names) + "---:|---|---|")
    for key in order:
        got = [keyed[rev].get(key) for rev in names]
        last = next(m for m in reversed(got) if m is not None)
        cells = " | ".join(f"{m.ms:.2f}" if m else "-" for m in got)
        read = " / ".join(f"{m.read:,}" if m else "-" for m in got)
        print(
            f"| {key[0]} | {_short_sql(last.sql)} | {last.count} | {cells} | {last.returned} |"
            f" {read} | {last.scans} |"
        )
    if plans is not None:
        with plans.open("w") as fh:
            for rev in names:
                for m in phases[rev]:
                    fh.write(f"==== [{rev}] {m.case} #{m.index} ({m.ms:.2f} ms)\n{m.sql}\n\n")
                    fh.write(m.plan_text + "\n\n")
        print(f"\nplans written to {plans}")


def scale_option(value: str) -> float:
    """``--scale``, refused below :data:`MIN_SCALE` before anything is started."""
    number = float(value)
    if not number >= MIN_SCALE:  # NaN too
        raise argparse.ArgumentTypeError(
            f"{value} is below {MIN_SCALE}: account 0 would have no live upload "
            "for the start-task case"
        )
    return number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scale",
        type=scale_option,
        default=1.0,
        help=f"1 = 2M tasks, 3M files; at least {MIN_SCALE}",
    )
    parser.add_argument("--database-url", help="an empty PostgreSQL database (default: own)")
    parser.add_argument("--reuse", action="store_true", help="the database is loaded already")
    parser.add_argument("--revisions", default="0003,head", help="schemas measured, in order")
    parser.add_argument("--repeat", type=int, default=5, help="EXPLAIN ANALYZE runs per query")
    parser.add_argument("--plans", type=Path, help="write every plan (text) to this file")
    args = parser.parse_args()
    revisions = [r.strip() for r in args.revisions.split(",") if r.strip()]

    server = None
    url = args.database_url
    if not url:
        from support.postgres import Postgres

        server = Postgres().start()
        url = server.new_database()
    engine = make_engine(url)
    data = Path(tempfile.mkdtemp(prefix="upscayl-dbbench-"))
    try:
        with engine.connect() as conn:
            version = conn.exec_driver_sql("SHOW server_version").scalar()
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        print(
            f"PostgreSQL {version}, Python {platform.python_version()}, commit {commit},"
            f" scale {args.scale}, {time.strftime('%Y-%m-%d')}"
        )
        settings = make_settings(data, database_url=url)
        ctx = build_context(settings, migrate=False)
        if not args.reuse:
            migrate_to(engine, revisions[0])
            sizes = Sizes.at(args.scale)
            print(f"loading {sizes}", flush=True)
            load(engine, sizes, settings.signing_secrets()[0])
        with engine.connect() as conn:
            for table in ("tasks", "task_files", "uploads"):
                rows = conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar()
                size = conn.exec_driver_sql(
                    f"SELECT pg_size_pretty(pg_total_relation_size('{table}'))"
                ).scalar()
                print(f"  {table}: {rows:,} rows, {size} with indexes")
        fx = fixture(engine)
        rolled = dataclasses.replace(ctx, db=RollbackEngine(engine))  # type: ignore[arg-type]
        phases: dict[str, list[Measured]] = {}
        for revision in revisions:
            start = time.perf_counter()
            migrate_to(engine, revision)
            took = time.perf_counter() - start
            vacuum_analyze(engine)
            print(f"schema {revision} ({current_revision(engine)}; migrated in {took:.1f} s)")
            phases[revision] = measure(rolled, engine, fx, args.repeat)
        report(phases, args.plans)
        ctx.db.dispose()
    finally:
        engine.dispose()
        shutil.rmtree(data, ignore_errors=True)
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
