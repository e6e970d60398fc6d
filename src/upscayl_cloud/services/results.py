"""Recording a task's outcome together with its credit settlement.

One transaction, guarded by the claimer's attempt number: the file results,
the final status, and the credits (captured for files that succeeded,
released for files that failed). A worker that lost its lease commits
nothing, so a crash or a retry can never charge twice.

A batch with a bad file does not die: every file is tried, the good ones are
delivered and charged, the bad ones are listed in ``error`` and refunded.
The task is ``completed`` when at least one file succeeded, else ``failed``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Connection, func, select, update

from upscayl_cloud.db.engine import now_ms, reading
from upscayl_cloud.db.tables import accounts, task_files, tasks
from upscayl_cloud.queue.lease import Claim, lock_for_finish, lost_beyond_retry
from upscayl_cloud.services.context import Context
from upscayl_cloud.services.uploads import safe_base_name

log = logging.getLogger(__name__)

#: Lost tasks the reaper reads at a time: what it holds in memory when a
#: mass loss of workers left thousands (it asks again until none is left).
REAP_CHUNK = 200


@dataclass(frozen=True)
class FileOutcome:
    file_id: int
    ok: bool
    error: str | None = None
    result_key: str | None = None
    thumbnail_key: str | None = None
    processed_file_name: str | None = None
    result_type: str | None = None
    final_file_size: int | None = None
    width: int | None = None
    height: int | None = None


def _settle(conn: Connection, task_id: str, succeeded: int) -> int:
    """Capture the price of ``succeeded`` files from the reservation; give the rest back.

    The price is the one reserved when the task was started, not today's
    ``credits_per_image``: an operator who changes the price (and restarts)
    while tasks wait must neither charge more than was reserved, which would
    refund a negative amount, nor less than the caller agreed to pay.
    """
    task = conn.execute(
        select(tasks.c.account_id, tasks.c.credits_reserved).where(tasks.c.id == task_id)
    ).one()
    files = conn.execute(
        select(func.count()).select_from(task_files).where(task_files.c.task_id == task_id)
    ).scalar_one()
    charged = task.credits_reserved * succeeded // files if files else 0
    charged = max(0, min(charged, task.credits_reserved))
    refund = task.credits_reserved - charged
    conn.execute(update(tasks).where(tasks.c.id == task_id).values(credits_charged=charged))
    if refund:
        conn.execute(
            update(accounts)
            .where(accounts.c.id == task.account_id)
            .values(credits=accounts.c.credits + refund)
        )
    return charged


def finish_task(
    ctx: Context, claim: Claim, outcomes: list[FileOutcome], names: dict[int, str]
) -> bool:
    """Record every file's outcome; False (and nothing written) if the lease was lost."""
    succeeded = [o for o in outcomes if o.ok]
    failed = [o for o in outcomes if not o.ok]
    status = "completed" if succeeded else "failed"
    error = None
    if failed:
        details = "; ".join(f"{names[o.file_id]}: {o.error}" for o in failed)
        error = f"{len(failed)} of {len(outcomes)} files failed: {details}"
    now = now_ms()
    retention = ctx.settings.result_retention_seconds * 1000
    with ctx.db.begin() as conn:
        if not lock_for_finish(conn, claim, status, error):
            return False
        for outcome in outcomes:
            values = {
                "status": "completed" if outcome.ok else "failed",
                "error": outcome.error,
                "result_key": outcome.result_key,
                "thumbnail_key": outcome.thumbnail_key,
                # Built from the client's original name: clients save the
                # download under it, so only a safe base name is recorded.
                "processed_file_name": safe_base_name(outcome.processed_file_name)
                if outcome.processed_file_name
                else None,
                "result_type": outcome.result_type,
                "final_file_size": outcome.final_file_size,
                "width": outcome.width,
                "height": outcome.height,
                "completed_at": now if outcome.ok else None,
                "expires_at": now + retention if outcome.ok else None,
            }
            conn.execute(
                update(task_files).where(task_files.c.id == outcome.file_id).values(values)
            )
        charged = _settle(conn, claim.task_id, len(succeeded))
    log.info(
        "task %s attempt %d %s: %d of %d files delivered, %d credits charged",
        claim.task_id, claim.attempt, status, len(succeeded), len(outcomes), charged,
    )  # fmt: skip
    return True


def fail_task(ctx: Context, claim: Claim, error: str, reaping_beyond: int | None = None) -> bool:
    """Fail a held (or, with ``reaping_beyond``, a reaped) task as a whole
    and release its whole reservation."""
    with ctx.db.begin() as conn:
        if not lock_for_finish(conn, claim, "failed", error, reaping_beyond):
            return False
        _settle(conn, claim.task_id, 0)
    log.info("task %s attempt %d failed, credits released: %s", claim.task_id, claim.attempt, error)
    return True


def output_folders(account_id: str, claim: Claim) -> tuple[str, str]:
    """Where ``claim``'s attempt stores its results and thumbnails: a folder
    per attempt, so a successor never writes over a lost worker's files."""
    prefix = f"{account_id}/{claim.task_id}/{claim.attempt}"
    return f"results/{prefix}", f"thumbs/{prefix}"


def discard_outputs(ctx: Context, account_id: str, task_id: str, attempts: range) -> None:
    """Delete what the given attempts of a task stored."""
    for attempt in attempts:
        for folder in output_folders(account_id, Claim(task_id, attempt)):
            ctx.storage.delete_prefix(folder)


def reap_lost(ctx: Context) -> int:
    """Fail (and refund) tasks no worker will claim again, and delete what
    their attempts stored: a worker that died mid-task leaves its finished
    files behind, delivered to nobody. Returns how many were failed.

    Read :data:`REAP_CHUNK` at a time, asked for again until none is left:
    a mass loss of workers left thousands, all loaded at once (and on SQLite
    the look took the write lock; it is a read)."""
    limit = ctx.settings.max_attempts
    reaped = 0
    while True:
        with reading(ctx.db) as conn:
            lost = lost_beyond_retry(conn, limit, REAP_CHUNK)
        failed = sum(_reap(ctx, *task, limit) for task in lost)
        reaped += failed
        # A short chunk was the last; one where every task was spared (a
        # lease renewed since the look) is not asked for again in this call.
        if len(lost) < REAP_CHUNK or failed == 0:
            return reaped


def _reap(ctx: Context, task_id: str, account_id: str, attempts: int, limit: int) -> bool:
    """Fail one lost task and delete its attempts' outputs; False when its
    guarded write found it no longer lost."""
    times = "once" if attempts == 1 else f"{attempts} times"
    message = f"Processing was interrupted {times}; giving up"
    if not fail_task(ctx, Claim(task_id, attempts), message, reaping_beyond=limit):
        return False
    try:
        discard_outputs(ctx, account_id, task_id, range(1, attempts + 1))
    except Exception as exc:  # the task is failed all the same; files stay behind
        log.warning("task %s: its outputs could not be deleted: %s", task_id, exc)
    return True
