"""indexes for a year of history: scans follow what is live, not what is kept

Measured by bench/db_queries.py on PostgreSQL with 2,000,000 tasks,
3,000,000 task_files and 3,150,000 uploads, mostly old (bench/README.md,
"Database at scale"). Rows are marked deleted, never removed, so every query
that reads only live rows walked the whole history through an index on all
of it. Each index below says which query it serves:

- ix_uploads_live_account_id (account_id, expires_at) WHERE deleted_at IS
  NULL: the pending cap of get-upload-url reads an account's live uploads
  (through ix_uploads_account_id it read all of the account's uploads), and
  the sweeper's expired originals read this small index whole. It replaces
  ix_uploads_expires_at, which held every upload ever made, so that the
  sweeper read them all (no other query used it). There is deliberately no
  partial index on (expires_at) alone: PostgreSQL multiplies the
  selectivities of "deleted_at IS NULL" and "expires_at >= now" (the live
  rows are exactly the unexpired ones) into a handful of rows, and picked
  such an index over the primary key for start-task's lock on its uploads,
  reading every live upload of the service instead of two rows.
- ix_uploads_unpurged (deleted_at) WHERE deleted_at IS NOT NULL AND
  purged_at IS NULL: the sweeper's rows marked but not yet purged, usually
  none. It replaces ix_uploads_purged_at (0003), whose NULL entries held
  every live upload too, and whose other entries (every upload ever purged)
  served no query.
- ix_task_files_live_expires_at (expires_at) WHERE deleted_at IS NULL AND
  expires_at IS NOT NULL: the sweeper's expired results. It replaces
  ix_task_files_expires_at (every delivered file ever, used by nothing else).
- ix_task_files_source_key (source_key): whether a task names an upload, one
  index probe: the sweeper's in-use check before marking an original deleted
  (it joined every unfinished task's files), and the pending cap's "named by
  no task" (as a NOT EXISTS).
- ix_tasks_history (account_id, created_at, status, batch_mode): history
  pages and their totals. It replaces ix_tasks_account_id_created_at: with
  status and batch_mode in the index, a filtered total (failed, batch,
  status) counts index entries instead of fetching each of the account's
  task rows.
- ix_tasks_queue (created_at) WHERE status = 'pending' OR status =
  'processing': the claim takes the oldest due task straight from the front
  of the unfinished ones, instead of sorting every one of them per claim (a
  backlog of 100,000 would be sorted by every poll).

Partial indexes work on both databases (SQLite since 3.8). On PostgreSQL
every index is built and dropped ``CONCURRENTLY`` (``db/ddl.py``), outside
the migration's transaction, so the tables stay readable and writable
throughout. This revision first ran inside one transaction: its first
``DROP INDEX`` took the ACCESS EXCLUSIVE lock of uploads (then task_files,
then tasks), which blocks reads as well as writes, and held it through every
later index build to the final commit (10-12 s at the sizes above, see the
README's migration time). Each step here commits on its own, and is written
to be run again from wherever an interrupted run stopped: ``IF [NOT]
EXISTS``, and an invalid index left by an interrupted build is dropped and
built again. New indexes come before the ones they replace, so a run that
stops half way leaves every query an index to use. A concurrent build or
drop waits for transactions already running (a long report, a ``pg_dump``)
without blocking anyone meanwhile: such a reader delays the upgrade, not
the service.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from upscayl_cloud.db.ddl import create_index, drop_index

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

LIVE_UPLOAD = "deleted_at IS NULL"
UNPURGED = "deleted_at IS NOT NULL AND purged_at IS NULL"
LIVE_RESULT = "deleted_at IS NULL AND expires_at IS NOT NULL"
UNFINISHED = "status = 'pending' OR status = 'processing'"


def upgrade() -> None:
    create_index(
        "ix_uploads_live_account_id", "uploads", ["account_id", "expires_at"], where=LIVE_UPLOAD
    )
    drop_index("ix_uploads_expires_at", "uploads")
    create_index("ix_uploads_unpurged", "uploads", ["deleted_at"], where=UNPURGED)
    drop_index("ix_uploads_purged_at", "uploads")
    create_index("ix_task_files_live_expires_at", "task_files", ["expires_at"], where=LIVE_RESULT)
    drop_index("ix_task_files_expires_at", "task_files")
    create_index("ix_task_files_source_key", "task_files", ["source_key"])
    create_index("ix_tasks_history", "tasks", ["account_id", "created_at", "status", "batch_mode"])
    drop_index("ix_tasks_account_id_created_at", "tasks")
    create_index("ix_tasks_queue", "tasks", ["created_at"], where=UNFINISHED)


def downgrade() -> None:
    drop_index("ix_tasks_queue", "tasks")
    create_index("ix_tasks_account_id_created_at", "tasks", ["account_id", "created_at"])
    drop_index("ix_tasks_history", "tasks")
    drop_index("ix_task_files_source_key", "task_files")
    create_index("ix_task_files_expires_at", "task_files", ["expires_at"])
    drop_index("ix_task_files_live_expires_at", "task_files")
    create_index("ix_uploads_purged_at", "uploads", ["purged_at"])
    drop_index("ix_uploads_unpurged", "uploads")
    create_index("ix_uploads_expires_at", "uploads", ["expires_at"])
    drop_index("ix_uploads_live_account_id", "uploads")
