"""Claiming tasks with a lease, and the guard on every later write.

The rules measured in ARCHITECTURE.md: one atomic statement claims a pending
task *or* one whose lease expired (its worker died), bumping ``attempts``;
on a pending task ``lease_until`` means "not before" (0 for a new task, a
later time for one handed back to wait out an outage: see ``release``);
every later write is conditioned on ``attempts`` still being the claimer's,
so a worker that lost its lease can never overwrite its successor. On SQLite
the claim runs in a ``BEGIN IMMEDIATE`` transaction (see ``db/engine.py``);
on PostgreSQL the sub-select takes ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, and_, or_, select, update

from upscayl_cloud.db.engine import now_ms
from upscayl_cloud.db.tables import TASK_COUNT_SHARDS, task_counts, tasks


@dataclass(frozen=True)
class Claim:
    task_id: str
    attempt: int


def _claimable(now: int, max_attempts: int) -> object:
    """Pending and due, or processing with an expired lease, with attempts left.
    One condition for both: a pending task's ``lease_until`` is the time it
    becomes due again (0, always due, unless ``release`` set a delay)."""
    return and_(
        or_(tasks.c.status == "pending", tasks.c.status == "processing"),
        tasks.c.lease_until < now,
        tasks.c.attempts < max_attempts,
    )


def claim(db: Engine, owner: str, lease_seconds: float, max_attempts: int) -> Claim | None:
    """Take the oldest available task, or None when there is nothing to do."""
    now = now_ms()
    candidate = (
        select(tasks.c.id)
        .where(_claimable(now, max_attempts))
        .order_by(tasks.c.created_at)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    with db.begin() as conn:
        row = conn.execute(
            update(tasks)
            .where(tasks.c.id == candidate)
            .values(
                status="processing",
                attempts=tasks.c.attempts + 1,
                progress=0,  # a new attempt starts over (an expired one's files are redone)
                lease_owner=owner,
                lease_until=now + int(lease_seconds * 1000),
                updated_at=now,
            )
            .returning(tasks.c.id, tasks.c.attempts)
        ).first()
    return Claim(row.id, row.attempts) if row else None


def guarded(task_id: str, attempt: int) -> object:
    """WHERE clause of every write by the holder of ``attempt``."""
    return and_(tasks.c.id == task_id, tasks.c.attempts == attempt, tasks.c.status == "processing")


def renew(db: Engine, claim: Claim, lease_seconds: float, progress: int | None = None) -> bool:
    """Extend the lease (and record progress); False when the task was lost."""
    now = now_ms()
    values: dict[str, int] = {"lease_until": now + int(lease_seconds * 1000), "updated_at": now}
    if progress is not None:
        values["progress"] = progress
    with db.begin() as conn:
        result = conn.execute(
            update(tasks).where(guarded(claim.task_id, claim.attempt)).values(values)
        )
    return result.rowcount == 1


def release(
    db: Engine, claim: Claim, delay_seconds: float = 0, give_back_attempt: bool = False
) -> bool:
    """Hand a held task back to the queue: claimable only after
    ``delay_seconds`` when the object store or the database failed (a store
    that is down would otherwise burn every attempt in a second), its attempt
    counted so the retry limit still bounds it; at once on a clean shutdown,
    with ``give_back_attempt``: the stop was the operator's, not the task's,
    and a rolling restart must never leave a task pending with no attempt
    left (claim skips it, and only processing tasks are reaped). The caller
    must have discarded the attempt's outputs first: the next claim reuses
    its number."""
    now = now_ms()
    due = now + int(delay_seconds * 1000) if delay_seconds > 0 else 0
    values: dict[str, object] = {
        "status": "pending",
        "progress": 0,  # the next attempt starts over: a pending task shows none done
        "lease_owner": None,
        "lease_until": due,
        "updated_at": now,
    }
    if give_back_attempt:
        values["attempts"] = tasks.c.attempts - 1
    with db.begin() as conn:
        result = conn.execute(
            update(tasks).where(guarded(claim.task_id, claim.attempt)).values(values)
        )
    return result.rowcount == 1


def _out_of_attempts(now: int, max_attempts: int) -> object:
    """Claimable but for its attempts: never to be claimed again, so failed
    by the reaper. A processing one lost its last worker; a pending one was
    handed back on its last attempt, or the operator lowered the limit."""
    return and_(
        or_(tasks.c.status == "pending", tasks.c.status == "processing"),
        tasks.c.lease_until < now,
        tasks.c.attempts >= max_attempts,
    )


def lock_for_finish(
    conn: Connection,
    claim: Claim,
    status: str,
    error: str | None,
    reaping_beyond: int | None = None,
) -> bool:
    """Move a held task to its final status inside the caller's transaction,
    and count it there (``task_counts``): every task finishes through here.
    With ``reaping_beyond`` (the attempt limit) the task is not held but
    reaped, and only while still out of attempts: a worker that renewed its
    lease since the reaper looked keeps it."""
    now = now_ms()
    if reaping_beyond is None:
        condition = guarded(claim.task_id, claim.attempt)
    else:
        condition = and_(
            tasks.c.id == claim.task_id,
            tasks.c.attempts == claim.attempt,
            _out_of_attempts(now, reaping_beyond),
        )
    result = conn.execute(
        update(tasks)
        .where(condition)
        .values(
            status=status,
            error=error,
            progress=100 if status == "completed" else tasks.c.progress,
            lease_owner=None,
            lease_until=0,
            updated_at=now,
            finished_at=now,
        )
    )
    if result.rowcount != 1:
        return False
    conn.execute(
        update(task_counts)
        .where(
            task_counts.c.status == status,
            task_counts.c.shard == random.randrange(TASK_COUNT_SHARDS),
        )
        .values(count=task_counts.c.count + 1)
    )
    return True


def lost_beyond_retry(
    conn: Connection, max_attempts: int, limit: int
) -> list[tuple[str, str, int]]:
    """Tasks no worker will ever claim again: (id, account id, attempts), the
    longest lost first, at most ``limit`` of them (a mass loss of workers is
    reaped in chunks, never held in memory whole)."""
    rows = conn.execute(
        select(tasks.c.id, tasks.c.account_id, tasks.c.attempts)
        .where(_out_of_attempts(now_ms(), max_attempts))
        .order_by(tasks.c.lease_until, tasks.c.id)
        .limit(limit)
    ).all()
    return [(row.id, row.account_id, row.attempts) for row in rows]
