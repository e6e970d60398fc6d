"""store_identity: which object store the processes of a database use

A worker whose machine lacked UPSCAYL_STORAGE_BACKEND=s3 used a local folder
beside the shared PostgreSQL: it claimed tasks, found none of their files
and failed each one in under a second, draining the queue faster than the
healthy workers. The database and its store now share a random id (this
row, and a marker object in the store), and a process whose store does not
hold it refuses to start. The first process after this migration pairs them.
paired_at is set once the row's id is in a store (written there as its
marker, or taken from one): a row without it was made by a start cut short
before it wrote the marker, which a later start at the same store finishes.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "store_identity",
        sa.Column("slot", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("location", sa.Text(), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("paired_at", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("slot = 1", name="ck_store_identity_slot"),
        sa.PrimaryKeyConstraint("slot", name="pk_store_identity"),
    )


def downgrade() -> None:
    op.drop_table("store_identity")
