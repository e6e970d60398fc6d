"""Many claimers at once, for real: threads in several processes, on SQLite and
PostgreSQL. Every task is claimed exactly once and completed exactly once."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

from sqlalchemy import event, func, select

from support.tasks import bare_tasks
from upscayl_cloud.db.tables import tasks
from upscayl_cloud.queue.lease import claim
from upscayl_cloud.services.context import Context

# One process: THREADS threads claim and complete until the queue is empty,
# printing each claimed id. Completion is the guarded final write.
_CLAIMER = """
import sys, threading
from upscayl_cloud.db.engine import make_engine
from upscayl_cloud.queue.lease import claim, lock_for_finish
engine = make_engine(sys.argv[1])
threads, out, lock = int(sys.argv[2]), [], threading.Lock()
def run(n):
    while (held := claim(engine, f"p{sys.argv[3]}:{n}", 30, 3)) is not None:
        with engine.begin() as conn:
            assert lock_for_finish(conn, held, "completed", None)
        with lock:
            out.append(held.task_id)
workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
for w in workers: w.start()
for w in workers: w.join()
print("\\n".join(out))
"""
TASKS = 240
PROCESSES = 3
THREADS = 4


def test_many_processes_and_threads_claim_each_task_once(ctx: Context) -> None:
    ids = set(bare_tasks(ctx.db, TASKS))
    url = ctx.db.url.render_as_string(hide_password=False)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CLAIMER, url, str(THREADS), str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(PROCESSES)
    ]
    claimed: Counter[str] = Counter()
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        claimed.update(line for line in out.splitlines() if line)
    assert set(claimed) == ids
    assert max(claimed.values()) == 1
    with ctx.db.begin() as conn:
        rows = conn.execute(
            select(tasks.c.status, tasks.c.attempts, func.count()).group_by(
                tasks.c.status, tasks.c.attempts
            )
        ).all()
    assert [tuple(r) for r in rows] == [("completed", 1, TASKS)]


def test_postgresql_claim_uses_skip_locked(ctx: Context) -> None:
    """The claim's sub-select takes FOR UPDATE SKIP LOCKED on PostgreSQL, so
    claimers pass over each other's rows instead of queueing behind them."""
    bare_tasks(ctx.db, 1)
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        statements.append(statement)

    event.listen(ctx.db, "before_cursor_execute", record)
    try:
        assert claim(ctx.db, "w", 30, 3) is not None
    finally:
        event.remove(ctx.db, "before_cursor_execute", record)
    (sql,) = [s for s in statements if s.lstrip().upper().startswith("UPDATE TASKS")]
    if ctx.db.dialect.name == "postgresql":
        assert "FOR UPDATE SKIP LOCKED" in sql
    else:  # SQLite serialises writers with BEGIN IMMEDIATE instead
        assert "FOR UPDATE" not in sql
