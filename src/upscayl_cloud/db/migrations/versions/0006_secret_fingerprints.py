"""secret_fingerprints: which signing secrets the processes of a database use

API keys are stored as HMACs under the signing secret, so a machine whose
secret differs from the others' (UPSCAYL_SECRET_KEYS unset, each with its
own data folder's secret.key) answered 401 to every key made elsewhere,
intermittently behind a load balancer. Each process records its secrets'
fingerprints here and refuses to start when none of them is known.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "secret_fingerprints",
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("fingerprint", name="pk_secret_fingerprints"),
    )


def downgrade() -> None:
    op.drop_table("secret_fingerprints")
