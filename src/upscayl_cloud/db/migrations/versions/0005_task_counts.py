"""task_counts: tasks finished, by final status, counted as they finish

/metrics counted every task by status at each scrape: about 300 ms of
PostgreSQL time per scrape and replica at 2,000,000 tasks (bench/README.md,
"Database at scale"), and growing with history, which is kept. The finished
tasks are now counted as they finish, in the transaction that finishes them,
spread over 16 rows a status so that concurrent finishes do not queue on
one row's lock; /metrics sums 32 rows, and counts only the unfinished tasks
(through the claim's partial index).

The tasks finished so far are counted here, once. During a rolling upgrade,
tasks finished by processes still on the old code are not counted: the
totals then stay short by those (they are metrics; the tasks themselves are
unaffected).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SHARDS = 16
FINAL = ("completed", "failed")


def upgrade() -> None:
    counts = op.create_table(
        "task_counts",
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("status", "shard", name="pk_task_counts"),
    )
    op.bulk_insert(
        counts,
        [{"status": s, "shard": n, "count": 0} for s in FINAL for n in range(SHARDS)],
    )
    op.execute(
        "UPDATE task_counts SET count = "
        "(SELECT count(*) FROM tasks WHERE tasks.status = task_counts.status) "
        "WHERE shard = 0"
    )


def downgrade() -> None:
    op.drop_table("task_counts")
