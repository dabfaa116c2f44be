"""Cluster shutdown and recovery: which nodes mko cordoned, and whether a wake rule recovers (issue 5).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(
            sa.Column("cordoned_by_mko", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("power_rules") as batch:
        batch.add_column(
            sa.Column("recover_after_wake", sa.Boolean(), nullable=False, server_default=sa.true())
        )
    with op.batch_alter_table("nodes") as batch:
        batch.alter_column("cordoned_by_mko", server_default=None)
    with op.batch_alter_table("power_rules") as batch:
        batch.alter_column("recover_after_wake", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("power_rules") as batch:
        batch.drop_column("recover_after_wake")
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("cordoned_by_mko")
