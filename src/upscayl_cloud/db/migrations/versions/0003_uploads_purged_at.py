"""uploads.purged_at: an original marked deleted is purged until it is gone

The sweeper marked a row deleted, committed, then deleted its object: a
process killed between the two left the object in the store for good, since
no pass looked at rows already marked. Marked and purged are now two facts,
and each pass purges the rows marked but not yet purged.

Rows already marked were purged by the code that marked them (or abandoned by
a killed process, as before): they count as purged when they were marked.
A downgrade hands rows marked but not yet purged back to code that never
purges them.

On PostgreSQL the rows are updated in batches (``db/ddl.py``), each its own
transaction, after the column is committed: in one statement, in
the transaction that added the column, the ACCESS EXCLUSIVE lock taken by
``ADD COLUMN`` (reads blocked as well as writes) was held for as long as it
took to rewrite every upload ever deleted (nearly all of the 3,150,000 in
bench/README.md's "Database at scale"). Processes of the old release keep
marking rows meanwhile: a row marked after its batch is left not purged, as
one marked after the old single statement was, and the sweeper purges it
again (a store's delete of a missing object succeeds). A run interrupted
part way finds the column there (``IF NOT EXISTS``) and updates what is
left. The index is built after the backfill (one build, not one update per
row), ``CONCURRENTLY`` (``db/ddl.py``). SQLite keeps the single statement
in the migration's transaction: readers under WAL do not wait for it.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from upscayl_cloud.db.ddl import create_index, drop_index, update_in_batches

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.add_column(
        "uploads", sa.Column("purged_at", sa.BigInteger(), nullable=True), if_not_exists=postgres
    )
    update_in_batches(
        "uploads",
        "file_name",
        "purged_at = deleted_at",
        "deleted_at IS NOT NULL AND purged_at IS NULL",
    )
    create_index("ix_uploads_purged_at", "uploads", ["purged_at"])


def downgrade() -> None:
    drop_index("ix_uploads_purged_at", "uploads")
    with op.batch_alter_table("uploads") as batch:
        batch.drop_column("purged_at")
