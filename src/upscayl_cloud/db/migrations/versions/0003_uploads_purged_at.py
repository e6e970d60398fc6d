"""uploads.purged_at: an original marked deleted is purged until it is gone

The sweeper marked a row deleted, committed, then deleted its object: a
process killed between the two left the object in the store for good, since
no pass looked at rows already marked. Marked and purged are now two facts,
and each pass purges the rows marked but not yet purged.

Rows already marked were purged by the code that marked them (or abandoned by
a killed process, as before): they count as purged when they were marked.
A downgrade hands rows marked but not yet purged back to code that never
purges them.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("uploads", sa.Column("purged_at", sa.BigInteger(), nullable=True))
    op.create_index("ix_uploads_purged_at", "uploads", ["purged_at"], unique=False)
    op.execute("UPDATE uploads SET purged_at = deleted_at WHERE deleted_at IS NOT NULL")


def downgrade() -> None:
    op.drop_index("ix_uploads_purged_at", table_name="uploads")
    with op.batch_alter_table("uploads") as batch:
        batch.drop_column("purged_at")
