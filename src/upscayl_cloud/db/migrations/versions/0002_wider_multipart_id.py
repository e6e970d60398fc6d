"""uploads.multipart_id holds any store's upload id

SeaweedFS's ids are 81 characters and AWS documents no maximum; 64 was
rejected by PostgreSQL (SQLite ignores lengths, so only PostgreSQL changes).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.alter_column(
        "uploads",
        "multipart_id",
        type_=sa.String(length=1024),
        existing_type=sa.String(length=64),
        existing_nullable=True,
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.alter_column(
        "uploads",
        "multipart_id",
        type_=sa.String(length=64),
        existing_type=sa.String(length=1024),
        existing_nullable=True,
    )
