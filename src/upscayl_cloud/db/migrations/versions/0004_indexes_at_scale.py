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

Partial indexes work on both databases (SQLite since 3.8). On PostgreSQL the
indexes are built inside the migration's transaction, which blocks writes
to the table while each is built (seconds at the sizes above; see the
README's migration time).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

LIVE_UPLOAD = "deleted_at IS NULL"
UNPURGED = "deleted_at IS NOT NULL AND purged_at IS NULL"
LIVE_RESULT = "deleted_at IS NULL AND expires_at IS NOT NULL"
UNFINISHED = "status = 'pending' OR status = 'processing'"


def _partial(name: str, table: str, columns: list[str], where: str) -> None:
    op.create_index(
        name,
        table,
        columns,
        unique=False,
        postgresql_where=sa.text(where),
        sqlite_where=sa.text(where),
    )


def upgrade() -> None:
    _partial("ix_uploads_live_account_id", "uploads", ["account_id", "expires_at"], LIVE_UPLOAD)
    op.drop_index("ix_uploads_expires_at", table_name="uploads")
    _partial("ix_uploads_unpurged", "uploads", ["deleted_at"], UNPURGED)
    op.drop_index("ix_uploads_purged_at", table_name="uploads")
    _partial("ix_task_files_live_expires_at", "task_files", ["expires_at"], LIVE_RESULT)
    op.drop_index("ix_task_files_expires_at", table_name="task_files")
    op.create_index("ix_task_files_source_key", "task_files", ["source_key"], unique=False)
    op.create_index(
        "ix_tasks_history",
        "tasks",
        ["account_id", "created_at", "status", "batch_mode"],
        unique=False,
    )
    op.drop_index("ix_tasks_account_id_created_at", table_name="tasks")
    _partial("ix_tasks_queue", "tasks", ["created_at"], UNFINISHED)


def downgrade() -> None:
    op.drop_index("ix_tasks_queue", table_name="tasks")
    op.create_index(
        "ix_tasks_account_id_created_at", "tasks", ["account_id", "created_at"], unique=False
    )
    op.drop_index("ix_tasks_history", table_name="tasks")
    op.drop_index("ix_task_files_source_key", table_name="task_files")
    op.create_index("ix_task_files_expires_at", "task_files", ["expires_at"], unique=False)
    op.drop_index("ix_task_files_live_expires_at", table_name="task_files")
    op.create_index("ix_uploads_purged_at", "uploads", ["purged_at"], unique=False)
    op.drop_index("ix_uploads_unpurged", table_name="uploads")
    op.create_index("ix_uploads_expires_at", "uploads", ["expires_at"], unique=False)
    op.drop_index("ix_uploads_live_account_id", table_name="uploads")
