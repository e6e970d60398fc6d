"""The lease queue's rules, on real SQLite with real threads."""

from __future__ import annotations

import threading
import time

from sqlalchemy import select, update

from support.tasks import queued_task
from upscayl_cloud.db.tables import tasks
from upscayl_cloud.queue.lease import Claim, claim, release, renew
from upscayl_cloud.services.context import Context
from upscayl_cloud.services.keys import Principal


def test_claim_takes_oldest_pending_and_bumps_attempts(ctx: Context, principal: Principal) -> None:
    first = queued_task(ctx, principal)
    second = queued_task(ctx, principal)
    a = claim(ctx.db, "w1", 30, 3)
    b = claim(ctx.db, "w2", 30, 3)
    assert (a.task_id, a.attempt) == (first, 1)
    assert (b.task_id, b.attempt) == (second, 1)
    assert claim(ctx.db, "w3", 30, 3) is None


def test_concurrent_claims_never_share_a_task(ctx: Context, principal: Principal) -> None:
    ids = {queued_task(ctx, principal) for _ in range(8)}
    got: list[Claim] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        while (held := claim(ctx.db, name, 30, 3)) is not None:
            with lock:
                got.append(held)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(c.task_id for c in got) == sorted(ids)


def test_expired_lease_is_reclaimed_and_old_holder_is_fenced(
    ctx: Context, principal: Principal
) -> None:
    task_id = queued_task(ctx, principal)
    lease = 0.5
    before = time.monotonic()
    old = claim(ctx.db, "dead", lease, 3)
    # Not claimable while the lease holds; a busy machine may reach this
    # check only after it expired, so a claim counts as early only before.
    new = claim(ctx.db, "w2", 30, 3)
    assert new is None or time.monotonic() - before >= lease  # lease still valid
    deadline = time.monotonic() + 30
    while new is None:
        assert time.monotonic() < deadline, "the expired lease was never reclaimed"
        time.sleep(0.05)
        new = claim(ctx.db, "w2", 30, 3)
    assert new == Claim(task_id, 2)
    assert renew(ctx.db, old, 30, progress=50) is False  # guarded by attempts
    assert renew(ctx.db, new, 30, progress=40) is True
    with ctx.db.begin() as conn:
        row = conn.execute(select(tasks).where(tasks.c.id == task_id)).one()
    assert (row.progress, row.lease_owner, row.attempts) == (40, "w2", 2)


def test_progress_starts_over_with_each_attempt(ctx: Context, principal: Principal) -> None:
    """A task handed back shows none done while it waits, and a lease that
    expired mid-task restarts at 0 too: the next attempt redoes the files."""
    task_id = queued_task(ctx, principal)

    def progress() -> int:
        with ctx.db.begin() as conn:
            return conn.execute(select(tasks.c.progress).where(tasks.c.id == task_id)).scalar_one()

    held = claim(ctx.db, "w", 30, 3)
    assert renew(ctx.db, held, 30, progress=25)
    assert release(ctx.db, held, give_back_attempt=True)
    assert progress() == 0
    held = claim(ctx.db, "w", 0.05, 3)
    assert renew(ctx.db, held, 0.05, progress=60)
    time.sleep(0.1)  # the holder died: its lease runs out
    assert claim(ctx.db, "w2", 30, 3) == Claim(task_id, held.attempt + 1)
    assert progress() == 0


def test_retry_limit_stops_claims(ctx: Context, principal: Principal) -> None:
    task_id = queued_task(ctx, principal)
    with ctx.db.begin() as conn:
        conn.execute(update(tasks).where(tasks.c.id == task_id).values(attempts=3))
    assert claim(ctx.db, "w", 30, 3) is None


def test_shutdown_hand_backs_never_use_up_a_task(ctx: Context, principal: Principal) -> None:
    """A rolling restart interrupts a task any number of times: each hand-back
    gives its attempt back, so the task stays claimable (claim skips a
    pending task with no attempt left, and the reaper sees only processing
    ones), while an outage's hand-back counts and waits."""
    task_id = queued_task(ctx, principal)
    for _ in range(5):
        held = claim(ctx.db, "w", 30, 3)
        assert held == Claim(task_id, 1)
        assert release(ctx.db, held, give_back_attempt=True)
        assert release(ctx.db, held, give_back_attempt=True) is False  # only once
    outage = claim(ctx.db, "w", 30, 3)
    assert release(ctx.db, outage, delay_seconds=60)
    assert claim(ctx.db, "w", 30, 3) is None  # due in a minute
    with ctx.db.begin() as conn:
        row = conn.execute(select(tasks).where(tasks.c.id == task_id)).one()
    assert (row.status, row.attempts) == ("pending", 1)


def test_claim_compiles_for_postgresql_with_skip_locked() -> None:
    """The same statement serves PostgreSQL: its sub-select skips locked rows."""
    from sqlalchemy import select as select_
    from sqlalchemy.dialects import postgresql

    from upscayl_cloud.queue.lease import _claimable

    statement = (
        select_(tasks.c.id)
        .where(_claimable(0, 3))
        .order_by(tasks.c.created_at)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    sql = str(statement.compile(dialect=postgresql.dialect()))
    assert "FOR UPDATE SKIP LOCKED" in sql
